//! The trace's life cycle: opened at the first device, closed when the last instance goes or at
//! process exit (which the library, pinned in memory, registers for).

use super::*;

impl Capture {
    /// `vkCreateDevice` succeeded: opens the trace on the first device.
    pub fn device_created(&self, props: &vk::PhysicalDeviceProperties) {
        let mut st = self.lock();
        if st.trace.is_open() {
            return;
        }
        if !self.settings.write_trace {
            if !st.trace.is_closed() {
                log::info!("vkdirty's own trace is off (VKDIRTY_WRITE_TRACE=0)");
                st.trace.off();
            }
            return;
        }
        let process = settings::process_name();
        let pid = std::process::id();
        let path = config::resolve_trace_path(
            self.settings.trace_file.as_deref(),
            &process,
            pid,
            settings::android_package().as_deref(),
        );
        let existing = st.trace.opening(self.settings.trace_exists);
        if settings::android_package().is_some() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let opts = WriterOptions {
            compression: self.settings.compression,
            flush_every_submit: self.settings.flush_every_submit,
            on_error: Some(Arc::new(|e: &str| {
                log::error!("writing the trace failed, capture stopped: {e}");
            })),
            ..WriterOptions::default()
        };
        let opened = match trace::open_trace_file(&path, existing) {
            Ok(o) => o,
            Err(e) => {
                log::error!("cannot create the trace, capture is off: {e}");
                st.trace.off();
                return;
            }
        };
        if let Some(note) = &opened.note {
            log::warn!("{note}");
        }
        let path = opened.path;
        match TraceWriter::with_sink(opened.file, path.display().to_string(), opts) {
            Ok(w) => {
                log::info!("capturing to {} (backend {})", path.display(), self.settings.backend);
                w.record(&Event::Session(trace::Session {
                    pid,
                    process_name: process,
                    app_name: st.app_name.clone(),
                    engine_name: st.engine_name.clone(),
                    device_name: c_name(&props.device_name),
                    vendor_id: props.vendor_id,
                    device_id: props.device_id,
                    driver_version: props.driver_version,
                    api_version: props.api_version,
                    settings: {
                        // The process's resolved settings carry where each value came from.
                        let r = settings::resolved();
                        let origins = if std::ptr::eq(self.settings, &r.settings) { &r.origins[..] } else { &[] };
                        settings::session_settings(self.settings, origins)
                    },
                }));
                st.trace.opened(w);
                self.owner_pid.store(pid, Ordering::Relaxed);
            }
            Err(e) => {
                log::error!("cannot create the trace, capture is off: {e}");
                st.trace.off();
            }
        }
    }

    /// The last instance is gone: closes the trace.
    pub fn last_instance_destroyed(&self) {
        let mut st = self.lock();
        close(&mut st, "the last instance was destroyed");
    }

    /// Process exit: closes the trace if the application did not destroy its instances. Waits
    /// a bounded time for the lock, so an exit racing a capture in another thread cannot hang.
    fn at_exit(&self) {
        // A forked child has neither the writer thread nor, possibly, an unlocked state.
        if self.owner_pid.load(Ordering::Relaxed) != std::process::id() {
            return;
        }
        if let Some(mut st) = self.state.try_lock_for(Duration::from_secs(2)) {
            close(&mut st, "the process exits");
        } else {
            log::error!("process exit while capture was busy: trace left without its end record");
        }
    }
}

fn c_name(bytes: &[std::ffi::c_char]) -> String {
    let b: Vec<u8> = bytes.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&b).into_owned()
}

fn close(st: &mut State, why: &str) {
    if let Some(closed) = st.trace.close() {
        match closed {
            Ok(t) => log::info!(
                "trace closed ({why}): {} submits, {} frames, {} dirty pages, {} dirty bytes",
                t.submits,
                t.frames,
                t.dirty_pages,
                t.dirty_bytes
            ),
            Err(e) => log::error!("closing the trace failed: {e}"),
        }
    }
}

extern "C" fn at_exit() {
    CAPTURE.at_exit();
}

/// Keeps this library loaded for the life of the process (the loader unloads layers at
/// `vkDestroyInstance`, but guard backends may leave signal handlers and threads pointing into
/// it), and closes the trace at exit even when the application never destroys its instance.
pub(super) fn pin_library_and_register_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: Dl_info is plain data; dladdr fills it for an address inside this library.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only reads the address; `info` is a valid out-pointer.
        let found = unsafe { libc::dladdr(at_exit as *const libc::c_void, &mut info) } != 0;
        if found && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic linker.
            // RTLD_NOLOAD only takes a reference on the already loaded library.
            let h = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
            if h.is_null() {
                log::warn!("could not pin the layer library in memory");
            }
        }
        // SAFETY: at_exit is a plain extern "C" fn in this library, which is now never unloaded.
        if unsafe { libc::atexit(at_exit) } != 0 {
            log::warn!("could not register the exit handler; a trace is whole only after vkDestroyInstance");
        }
    });
}
