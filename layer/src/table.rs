//! The hook table: one list of `name: PFN type => hook`. From it, [`hook_table!`] generates the
//! "next" dispatch table (one `Option<PFN>` per entry, resolved through the next layer's
//! `vkGet*ProcAddr`), the name → hook lookup used by this layer's `vkGet*ProcAddr`, and a
//! compile-time check that each hook has exactly the prototype of its `PFN_` type.

use ash::vk;
use std::ffi::CStr;

/// A NUL-terminated name from an identifier, checked at compile time.
macro_rules! cname {
    ($name:ident) => {
        const {
            match ::std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => panic!("entry point name with a NUL"),
            }
        }
    };
}

/// Casts a `PFN_vkVoidFunction` the loader returned for a name to that name's prototype.
macro_rules! cast_next {
    ($f:expr, $pfn:ty) => {
        // SAFETY: the next layer returned this pointer for this entry point's name, so it has
        // the entry point's prototype `$pfn` (a function pointer of the same size).
        $f.map(|f| unsafe { ::std::mem::transmute::<unsafe extern "system" fn(), $pfn>(f) })
    };
}

/// Generates a next-dispatch struct and the hook lookup.
///
/// `hooks`: intercepted entry points; `calls`: entry points the layer only calls down to.
macro_rules! hook_table {
    (
        $(#[$meta:meta])*
        pub struct $Table:ident, lookup $lookup:ident {
            hooks { $( $name:ident : $pfn:ident => $hook:path ),* $(,)? }
            calls { $( $cname:ident : $cpfn:ident ),* $(,)? }
        }
    ) => {
        $(#[$meta])*
        // Some entries exist only for the lookup (the layer obtains vkCreate* through the link).
        #[allow(non_snake_case, dead_code)]
        pub struct $Table {
            $( pub $name: Option<ash::vk::$pfn>, )*
            $( pub $cname: Option<ash::vk::$cpfn>, )*
        }

        impl $Table {
            /// Resolves every entry through `get` (the next layer's `vkGet*ProcAddr`).
            pub fn load(mut get: impl FnMut(&::std::ffi::CStr) -> ash::vk::PFN_vkVoidFunction) -> Self {
                $Table {
                    $( $name: $crate::table::cast_next!(get($crate::table::cname!($name)), ash::vk::$pfn), )*
                    $( $cname: $crate::table::cast_next!(get($crate::table::cname!($cname)), ash::vk::$cpfn), )*
                }
            }
        }

        // Each hook has exactly the prototype of its entry point.
        $( const _: ash::vk::$pfn = $hook; )*

        /// This layer's hook for `name`, if it intercepts that entry point.
        pub fn $lookup(name: &[u8]) -> ash::vk::PFN_vkVoidFunction {
            $(
                if name == stringify!($name).as_bytes() {
                    // SAFETY: a function pointer cast to the generic PFN_vkVoidFunction, which
                    // the caller casts back to the prototype of `name` before calling it.
                    return Some(unsafe {
                        ::std::mem::transmute::<ash::vk::$pfn, unsafe extern "system" fn()>($hook)
                    });
                }
            )*
            None
        }
    };
}

pub(crate) use {cast_next, cname, hook_table};

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
