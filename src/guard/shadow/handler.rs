//! The process-wide `SIGSEGV` handler: tells read from write faults, finds the region in the
//! fault table, and passes faults that are not ours to the action installed before it.

use super::fault_table::with_region;
use crate::guard::{BackendKind, GuardError};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Access {
    Read,
    Write,
    /// The context does not say (then a fault on a readable page must be a write).
    Unknown,
}

/// What kind of access faulted; `None` for faults that can't be ours (instruction fetch,
/// protection keys).
///
/// # Safety
/// `ctx` is the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn fault_access(ctx: *mut libc::c_void) -> Option<Access> {
    if ctx.is_null() {
        return Some(Access::Unknown);
    }
    // SAFETY: caller contract: `ctx` points to the kernel's ucontext_t.
    let err = unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] } as u64;
    const WRITE: u64 = 1 << 1;
    const FETCH: u64 = 1 << 4;
    const PKEY: u64 = 1 << 5;
    if err & (FETCH | PKEY) != 0 {
        None
    } else if err & WRITE != 0 {
        Some(Access::Write)
    } else {
        Some(Access::Read)
    }
}

/// aarch64: the ESR record in `uc_mcontext.__reserved` (a chain of `{magic, size}` records).
///
/// # Safety
/// `ctx` is the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
unsafe fn fault_access(ctx: *mut libc::c_void) -> Option<Access> {
    // `__reserved` follows `pstate`, 16-byte aligned (private in `libc`).
    const RESERVED_OFFSET: usize = (std::mem::offset_of!(libc::mcontext_t, pstate) + 8 + 15) & !15;
    if ctx.is_null() {
        return Some(Access::Unknown);
    }
    // SAFETY: caller contract: the kernel's ucontext_t, whose mcontext ends with the
    // 4096-byte `__reserved` area.
    let reserved = unsafe {
        let mc = std::ptr::addr_of!((*(ctx as *const libc::ucontext_t)).uc_mcontext) as *const u8;
        std::slice::from_raw_parts(mc.add(RESERVED_OFFSET), ESR_RESERVED_SIZE)
    };
    esr_access(reserved)
}

/// Size of aarch64's `sigcontext.__reserved`.
#[cfg_attr(not(all(target_arch = "aarch64", target_os = "linux")), allow(dead_code))]
const ESR_RESERVED_SIZE: usize = 4096;

/// Reads the access kind from aarch64 signal-frame records (`_aarch64_ctx { magic, size }`
/// chain, terminated by magic 0): the ESR record's exception class says data or instruction
/// abort, its WnR bit (6) write or read. Plain byte parsing, so it is tested on every target.
#[cfg_attr(not(all(target_arch = "aarch64", target_os = "linux")), allow(dead_code))]
fn esr_access(reserved: &[u8]) -> Option<Access> {
    const ESR_MAGIC: u32 = 0x4553_5201;
    const EC_IABT_LOW: u64 = 0x20;
    const EC_IABT_CUR: u64 = 0x21;
    const EC_DABT_LOW: u64 = 0x24;
    const EC_DABT_CUR: u64 = 0x25;
    const WNR: u64 = 1 << 6;
    let word = |at: usize| u32::from_ne_bytes(reserved[at..at + 4].try_into().unwrap());
    let mut off = 0usize;
    while off + 8 <= reserved.len() {
        let (magic, size) = (word(off), word(off + 4) as usize);
        if magic == 0 || size < 8 || off + size > reserved.len() {
            break;
        }
        if magic == ESR_MAGIC && size >= 16 {
            let esr = u64::from_ne_bytes(reserved[off + 8..off + 16].try_into().unwrap());
            return match (esr >> 26) & 0x3f {
                EC_IABT_LOW | EC_IABT_CUR => None,
                EC_DABT_LOW | EC_DABT_CUR if esr & WNR != 0 => Some(Access::Write),
                EC_DABT_LOW | EC_DABT_CUR => Some(Access::Read),
                _ => Some(Access::Unknown),
            };
        }
        off += size;
    }
    Some(Access::Unknown)
}

/// Other targets: the page state decides.
///
/// # Safety
/// None; kept `unsafe` for symmetry with the other targets.
#[cfg(not(any(all(target_arch = "x86_64", target_os = "linux"), all(target_arch = "aarch64", target_os = "linux"))))]
unsafe fn fault_access(_ctx: *mut libc::c_void) -> Option<Access> {
    Some(Access::Unknown)
}

/// Writes `msg` to stderr and aborts; async-signal-safe.
pub(super) fn fatal(msg: &[u8]) -> ! {
    // SAFETY: write and abort are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::abort()
    }
}

/// A `SIGSEGV` action ours chains to; written once, before the handler that reads it is installed.
struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: each slot is written once under `INSTALL` before `PREV_AT` points at it, then read only.
unsafe impl Sync for PrevAction {}

/// Another library (or the application) may put its own action over ours, or restore the one it
/// saw before it (as gfxreconstruct's page guard does when its last mapping goes). Ours then goes
/// back on top, chaining to what is there now (as gfxreconstruct's own watcher does), in a fresh
/// slot unless an identical action is already kept: a handler running meanwhile still reads the
/// old one.
const PREV_SLOTS: usize = 8;
/// Times ours was put back in front of another action (the layer logs the first).
static REINSTALLS: AtomicUsize = AtomicUsize::new(0);
static PREVS: [PrevAction; PREV_SLOTS] = [const { PrevAction(UnsafeCell::new(MaybeUninit::uninit())) }; PREV_SLOTS];
/// 1 + the slot of the action ours chains to now; 0 before ours is installed.
static PREV_AT: AtomicUsize = AtomicUsize::new(0);
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts the fault handler back when another library took it away (an unmap or free below may
/// have: gfxreconstruct's page guard restores the action it found when its last mapping goes).
/// Nothing before the shadow backend was first used.
pub fn restore_handler() {
    if PREV_AT.load(Ordering::Acquire) != 0 {
        let _ = install_handler();
    }
}

/// Installs the fault handler, or puts it back when another action replaced it.
pub(super) fn install_handler() -> Result<(), GuardError> {
    let r = (|| {
        let _serialised = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let ours =
            on_sigsegv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
        // SAFETY: sigaction with valid pointers; a slot is written before PREV_AT points at it
        // and before our handler (which reads it) is installed over the action it holds.
        unsafe {
            let mut cur = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
            let at = PREV_AT.load(Ordering::Acquire);
            if at != 0 && cur.sa_sigaction == ours {
                return Ok(());
            }
            // An action over ours may not pass our faults on: ours goes in front of it and
            // chains to it (a handler that chains back to ours ends in the default action, see
            // `on_sigsegv`).
            let same = |k: usize| {
                let p = (*PREVS[k].0.get()).assume_init_ref();
                p.sa_sigaction == cur.sa_sigaction && p.sa_flags == cur.sa_flags
            };
            match (0..at).find(|&k| same(k)) {
                Some(k) => PREV_AT.store(k + 1, Ordering::Release),
                None if at == PREV_SLOTS => {
                    return Err(format!("the SIGSEGV handler was replaced by {PREV_SLOTS} different actions"));
                }
                None => {
                    (*PREVS[at].0.get()).write(cur);
                    PREV_AT.store(at + 1, Ordering::Release);
                }
            }
            if at != 0 {
                REINSTALLS.fetch_add(1, Ordering::Relaxed);
            }
            let mut act = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            act.sa_sigaction =
                on_sigsegv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            // Nothing may interrupt the handler while it holds a page lock.
            libc::sigfillset(&mut act.sa_mask);
            if libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    })();
    r.map_err(|reason| GuardError::Unavailable { backend: BackendKind::Shadow, reason })
}

/// Times ours was put back in front of another `SIGSEGV` action since the process started.
pub fn handler_reinstalls() -> usize {
    REINSTALLS.load(Ordering::Relaxed)
}

thread_local! {
    /// The fault this thread is passing on, and roughly where the stack was: an action that
    /// chains back to ours re-enters with the same fault, deeper on the stack.
    static CHAINING: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes valid `info` and `ctx` to an SA_SIGINFO handler; the
    // thread-local is const-initialised without a destructor (a plain TLS access).
    unsafe {
        let errno = *libc::__errno_location();
        let handled = handle_fault(info, ctx);
        *libc::__errno_location() = errno;
        if !handled {
            let addr = if info.is_null() { 0 } else { (*info).si_addr() as usize };
            let here = &addr as *const usize as usize;
            let (busy_addr, busy_sp) = CHAINING.with(|c| c.get());
            if busy_sp != 0 && busy_addr == addr && here < busy_sp {
                // Passed back to us by the action we passed it to: nobody owns it.
                return default_action(sig, info);
            }
            CHAINING.with(|c| c.set((addr, here)));
            chain(sig, info, ctx);
            CHAINING.with(|c| c.set((0, 0)));
        }
    }
}

/// # Safety
/// Called from the handler with the kernel's arguments.
unsafe fn handle_fault(info: *mut libc::siginfo_t, ctx: *mut libc::c_void) -> bool {
    // SAFETY: caller contract.
    unsafe {
        // User-sent signals (si_code <= 0) are never ours.
        if info.is_null() || (*info).si_code <= 0 {
            return false;
        }
        let Some(access) = fault_access(ctx) else { return false };
        let addr = (*info).si_addr() as usize;
        with_region(addr, |g| g.on_fault(addr, access)).unwrap_or(false)
    }
}

/// Hands a fault that is not ours to the previously installed action.
///
/// # Safety
/// Called from the handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the slot PREV_AT names was written before it was published; the calls are
    // async-signal-safe; the previous handler gets the arguments the kernel gave us.
    unsafe {
        let at = PREV_AT.load(Ordering::Acquire);
        if at == 0 {
            return default_action(sig, info);
        }
        let prev = (*PREVS[at - 1].0.get()).assume_init_ref();
        let h = prev.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            let user_sent = !info.is_null() && (*info).si_code <= 0;
            if h == libc::SIG_IGN && user_sent {
                return;
            }
            // A fault cannot be ignored: the kernel applies the default action.
            return default_action(sig, info);
        }
        // Run it under the mask it would have had: the interrupted mask, its own sa_mask and,
        // unless SA_NODEFER, the signal itself.
        if !ctx.is_null() {
            let mut mask = (*(ctx as *const libc::ucontext_t)).uc_sigmask;
            for s in 1..=libc::SIGRTMAX() {
                if libc::sigismember(&prev.sa_mask, s) == 1 {
                    libc::sigaddset(&mut mask, s);
                }
            }
            if prev.sa_flags & libc::SA_NODEFER == 0 {
                libc::sigaddset(&mut mask, sig);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        }
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}

/// Restores the default action; a fault then re-executes and kills, a user-sent signal is
/// re-raised (delivered when the handler returns and unblocks it).
///
/// # Safety
/// Called from the handler.
unsafe fn default_action(sig: libc::c_int, info: *mut libc::siginfo_t) {
    // SAFETY: sigaction and raise are async-signal-safe.
    unsafe {
        let mut act = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &act, std::ptr::null_mut());
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(buf: &mut Vec<u8>, magic: u32, payload: &[u8]) {
        buf.extend_from_slice(&magic.to_ne_bytes());
        buf.extend_from_slice(&((8 + payload.len()) as u32).to_ne_bytes());
        buf.extend_from_slice(payload);
    }

    /// A `__reserved` area as the arm64 kernel lays it out: FPSIMD record (528 bytes), then
    /// the ESR record when there is one, then the terminator.
    fn frame(esr: Option<u64>) -> Vec<u8> {
        let mut b = Vec::new();
        record(&mut b, 0x4650_8001, &[0u8; 520]);
        if let Some(esr) = esr {
            record(&mut b, 0x4553_5201, &esr.to_ne_bytes());
        }
        record(&mut b, 0, &[]);
        b.resize(ESR_RESERVED_SIZE, 0);
        b
    }

    #[test]
    fn esr_record_tells_read_write_and_fetch() {
        let dabt_low = 0x24u64 << 26;
        let dabt_cur = 0x25u64 << 26;
        assert_eq!(esr_access(&frame(Some(dabt_low | 1 << 6 | 0xf))), Some(Access::Write));
        assert_eq!(esr_access(&frame(Some(dabt_low | 0xf))), Some(Access::Read));
        assert_eq!(esr_access(&frame(Some(dabt_cur | 1 << 6))), Some(Access::Write));
        assert_eq!(esr_access(&frame(Some(0x20u64 << 26))), None, "instruction abort");
        assert_eq!(esr_access(&frame(Some(0x15u64 << 26))), Some(Access::Unknown), "svc");
        assert_eq!(esr_access(&frame(None)), Some(Access::Unknown), "no ESR record");
        // A corrupt size never reads past the area.
        let mut bad = frame(Some(dabt_low));
        bad[4..8].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(esr_access(&bad), Some(Access::Unknown));
    }
}
