//! Helpers at the C boundary shared by the entry points: Vulkan `(count, pointer)` slices, pNext
//! chain search, C names, and casts between function-pointer types.

use ash::vk;
use std::ffi::{c_void, CStr};

/// Casts a `PFN_vkVoidFunction` the loader returned for a name to that name's prototype.
macro_rules! cast_next {
    ($f:expr, $pfn:ty) => {
        // SAFETY: the next layer returned this pointer for this entry point's name, so it has
        // the entry point's prototype `$pfn` (a function pointer of the same size).
        $f.map(|f| unsafe { ::std::mem::transmute::<unsafe extern "system" fn(), $pfn>(f) })
    };
}

pub(crate) use cast_next;

/// A slice from a Vulkan `(count, pointer)` pair; empty for a null pointer.
///
/// # Safety
/// `p` is null or points to `n` valid elements that outlive the returned slice.
pub unsafe fn slice<'a, T>(p: *const T, n: u32) -> &'a [T] {
    if p.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: caller contract.
    unsafe { std::slice::from_raw_parts(p, n as usize) }
}

/// Whether a `pNext` chain holds a structure of type `s`.
///
/// # Safety
/// `p` is null or a valid `pNext` chain.
pub unsafe fn chain_find(mut p: *const c_void, s: vk::StructureType) -> *const c_void {
    while !p.is_null() {
        // SAFETY: every element of a valid chain starts with sType/pNext.
        let b = unsafe { &*(p as *const vk::BaseInStructure<'_>) };
        if b.s_type == s {
            return p;
        }
        p = b.p_next.cast();
    }
    std::ptr::null()
}

/// The strings of a `(pointer, count)` name list (extension names); null entries are skipped.
///
/// # Safety
/// `names` is null or has `n` pointers, each null or NUL-terminated, outliving the result.
pub unsafe fn c_names<'a>(names: *const *const std::ffi::c_char, n: u32) -> Vec<&'a CStr> {
    // SAFETY: caller contract.
    unsafe { slice(names, n) }
        .iter()
        .filter(|p| !p.is_null())
        // SAFETY: caller contract.
        .map(|&p| unsafe { CStr::from_ptr(p) })
        .collect()
}

/// Reads a C string name as bytes; `None` for a null pointer.
///
/// # Safety
/// `name` is null or a NUL-terminated string (the `pName` of `vkGet*ProcAddr`).
pub unsafe fn name_bytes<'a>(name: *const std::ffi::c_char) -> Option<&'a [u8]> {
    if name.is_null() {
        return None;
    }
    // SAFETY: caller contract.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// `Some(f)` as a `PFN_vkVoidFunction` for an exported entry point.
pub fn void_fn<F: Copy>(f: F) -> vk::PFN_vkVoidFunction {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<unsafe extern "system" fn()>()) };
    // SAFETY: F is a function pointer type (checked by every caller's `const _: PFN = f`),
    // same size as the generic one.
    Some(unsafe { std::mem::transmute_copy::<F, unsafe extern "system" fn()>(&f) })
}
