//! Submit and frame numbering and the capture window (`VKDIRTY_FRAMES`, `VKDIRTY_SUBMITS`, the
//! runtime trigger): which submits are captured, and whether bytes collected now must still be
//! recorded for a later window's reconstruction.

use crate::config::Settings;

/// A runtime trigger (a file or a signal) that turns capture on and off.
pub trait Trigger {
    fn is_on(&self) -> bool;
    /// Reads the trigger at a present; whether capture is on from here.
    fn check(&mut self) -> bool;
    /// Reads the trigger at a submit before any present (may be throttled).
    fn check_at_submit(&mut self) -> bool;
    /// One frame (or, before any present, one submit) of an open window was captured.
    fn consumed(&mut self);
}

/// A capture window boundary crossed at a submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Start,
    Stop,
}

/// What a submit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitStep {
    /// Its sequence number, 1-based.
    pub seq: u64,
    /// The current frame, 1-based.
    pub frame: u64,
    /// Inside the window: every mapping is collected and written.
    pub active: bool,
    /// Dirty bytes collected at this submit are written (now or for a later window).
    pub record: bool,
    /// The window opened or closed here (only when capture is windowed).
    pub mark: Option<Mark>,
    /// The trigger turned on (`Some(true)`) or off at this submit.
    pub trigger_changed: Option<bool>,
}

/// What a present does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresentStep {
    /// The frame that ended.
    pub frame: u64,
    /// The last submit of that frame.
    pub last_submit: u64,
    /// The trigger turned on (`Some(true)`) or off from the next frame.
    pub trigger_changed: Option<bool>,
}

/// Numbering and window state of one capture.
pub struct Window<T> {
    /// Sequence number of the last submit (0 before the first).
    seq: u64,
    /// The current frame, 1-based (0 before the first present counts as 1).
    frame: u64,
    /// Whether the last submit was inside the window.
    active: bool,
    /// The runtime trigger, when one is configured.
    trigger: Option<T>,
    /// Whether the application has presented (then the trigger is checked per frame).
    presented: bool,
}

impl<T: Trigger> Window<T> {
    pub fn new(trigger: Option<T>) -> Window<T> {
        Window { seq: 0, frame: 0, active: false, trigger, presented: false }
    }

    /// The sequence number the next submit gets (what is collected now is recorded for it).
    pub fn next_submit(&self) -> u64 {
        self.seq + 1
    }

    /// Whether capture is limited to a window (FRAMES, SUBMITS or a trigger).
    pub fn windowed(&self, s: &Settings) -> bool {
        s.frames.is_some() || s.submits.is_some() || self.trigger.is_some()
    }

    /// Windowed and the last submit was outside the window: pages stay marked for the first
    /// captured submit.
    pub fn outside(&self, s: &Settings) -> bool {
        self.windowed(s) && !self.active
    }

    /// Whether bytes collected now (outside a submit) must be recorded: capture is on, or will be
    /// on later and needs them to reconstruct.
    pub fn records_later(&self, s: &Settings) -> bool {
        s.captures_later(self.frame.max(1), self.seq + 1)
    }

    /// A submit: numbers it and decides whether it is captured.
    pub fn submit(&mut self, s: &Settings) -> SubmitStep {
        self.seq += 1;
        let seq = self.seq;
        let frame = self.frame.max(1);
        let mut trigger_changed = None;
        let triggered = match self.trigger.as_mut() {
            None => true,
            // Before any present the trigger is checked at submits, a window counting submits.
            Some(t) if !self.presented => {
                let was = t.is_on();
                let on = t.check_at_submit();
                if on != was {
                    trigger_changed = Some(on);
                }
                on
            }
            Some(t) => t.is_on(),
        };
        let active = s.captures(frame, seq) && triggered;
        if !self.presented && active {
            if let Some(t) = self.trigger.as_mut() {
                t.consumed();
            }
        }
        let mark = (self.windowed(s) && active != self.active).then_some(if active { Mark::Start } else { Mark::Stop });
        self.active = active;
        let record = active || s.captures_later(frame, seq);
        SubmitStep { seq, frame, active, record, mark, trigger_changed }
    }

    /// A present: the current frame ends.
    pub fn present(&mut self) -> PresentStep {
        let frame = self.frame.max(1);
        self.frame = frame + 1;
        self.presented = true;
        let mut trigger_changed = None;
        if let Some(t) = self.trigger.as_mut() {
            // The frame just ended counts against the trigger's window if it was in it.
            let was = t.is_on();
            if was {
                t.consumed();
            }
            let on = t.check();
            if on != was {
                trigger_changed = Some(on);
            }
        }
        PresentStep { frame, last_submit: self.seq, trigger_changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Never configured.
    struct NoTrigger;
    impl Trigger for NoTrigger {
        fn is_on(&self) -> bool {
            unreachable!()
        }
        fn check(&mut self) -> bool {
            unreachable!()
        }
        fn check_at_submit(&mut self) -> bool {
            unreachable!()
        }
        fn consumed(&mut self) {
            unreachable!()
        }
    }

    /// A trigger switched by the test, counting `consumed` calls.
    #[derive(Default)]
    struct Switch {
        on: bool,
        want: bool,
        consumed: u32,
    }
    impl Trigger for Switch {
        fn is_on(&self) -> bool {
            self.on
        }
        fn check(&mut self) -> bool {
            self.on = self.want;
            self.on
        }
        fn check_at_submit(&mut self) -> bool {
            self.check()
        }
        fn consumed(&mut self) {
            self.consumed += 1;
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (s, warnings) = Settings::load(&move |n: &str| m.get(n).cloned());
        assert!(warnings.is_empty(), "{warnings:?}");
        s
    }

    #[test]
    fn without_a_window_every_submit_is_captured_and_numbered() {
        let s = settings(&[]);
        let mut w = Window::<NoTrigger>::new(None);
        assert!(!w.windowed(&s));
        assert_eq!(w.next_submit(), 1);
        for seq in 1..=3 {
            let step = w.submit(&s);
            assert_eq!(
                step,
                SubmitStep { seq, frame: 1, active: true, record: true, mark: None, trigger_changed: None }
            );
        }
        assert_eq!(w.present(), PresentStep { frame: 1, last_submit: 3, trigger_changed: None });
        assert_eq!(w.submit(&s).frame, 2);
        assert!(!w.outside(&s) && w.records_later(&s));
    }

    #[test]
    fn a_frame_window_marks_start_and_stop_and_records_before_it() {
        let s = settings(&[("FRAMES", "2-3")]);
        let mut w = Window::<NoTrigger>::new(None);
        let mut steps = Vec::new();
        for _ in 0..4 {
            steps.push(w.submit(&s));
            w.present();
        }
        let got: Vec<(u64, bool, bool, Option<Mark>)> =
            steps.iter().map(|s| (s.frame, s.active, s.record, s.mark)).collect();
        assert_eq!(
            got,
            vec![
                (1, false, true, None),
                (2, true, true, Some(Mark::Start)),
                (3, true, true, None),
                (4, false, false, Some(Mark::Stop)),
            ]
        );
        assert!(w.outside(&s));
        assert!(!w.records_later(&s), "nothing after the last window");
    }

    #[test]
    fn a_submit_window_counts_submits() {
        let s = settings(&[("SUBMITS", "3")]);
        let mut w = Window::<NoTrigger>::new(None);
        let a = w.submit(&s);
        assert!(!a.active && a.record && w.outside(&s) && w.records_later(&s));
        w.submit(&s);
        let c = w.submit(&s);
        assert_eq!((c.seq, c.active, c.mark), (3, true, Some(Mark::Start)));
        let d = w.submit(&s);
        assert_eq!((d.active, d.record, d.mark), (false, false, Some(Mark::Stop)));
    }

    #[test]
    fn the_trigger_counts_submits_before_a_present_and_frames_after() {
        let s = settings(&[]);
        let mut w = Window::new(Some(Switch::default()));
        assert!(w.windowed(&s));
        assert!(!w.submit(&s).active);
        w.trigger.as_mut().unwrap().want = true;
        let on = w.submit(&s);
        assert_eq!((on.active, on.mark, on.trigger_changed), (true, Some(Mark::Start), Some(true)));
        assert_eq!(w.trigger.as_ref().unwrap().consumed, 1, "a submit of the window before any present");
        // After a present the trigger is read per frame, not per submit.
        let p = w.present();
        assert_eq!((p.frame, p.trigger_changed), (1, None));
        assert_eq!(w.trigger.as_ref().unwrap().consumed, 2, "the frame that ended was in the window");
        w.trigger.as_mut().unwrap().want = false;
        assert!(w.submit(&s).active, "still on until the next present");
        let p = w.present();
        assert_eq!(p.trigger_changed, Some(false));
        let off = w.submit(&s);
        assert_eq!((off.active, off.mark), (false, Some(Mark::Stop)));
    }
}
