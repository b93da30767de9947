//! The hook table: one list of `name: PFN type => hook`. From it, [`hook_table!`] generates the
//! "next" dispatch table (one `Option<PFN>` per entry, resolved through the next layer's
//! `vkGet*ProcAddr`), the name → hook lookup used by this layer's `vkGet*ProcAddr`, and a
//! compile-time check that each hook has exactly the prototype of its `PFN_` type.

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
                    $( $name: $crate::ffi::cast_next!(get($crate::hook_table::cname!($name)), ash::vk::$pfn), )*
                    $( $cname: $crate::ffi::cast_next!(get($crate::hook_table::cname!($cname)), ash::vk::$cpfn), )*
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

pub(crate) use {cname, hook_table};
