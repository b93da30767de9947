//! The two macros of the entry-point tables. An entry is `name: PFN type`, or `name | alias: PFN
//! type` for a Vulkan core name and its extension alias (`vkQueueSubmit2 | vkQueueSubmit2KHR`).
//! - [`next_table!`] (registry side, `next.rs`): the next layer's entry points, resolved through
//!   its `vkGet*ProcAddr` when an instance or device is created. An aliased entry keeps both
//!   names' functions ([`Aliased`]), so a call goes down under the name the application used.
//! - [`hook_table!`] (entry side, `entry/table.rs`): the name → hook lookup of this layer's
//!   `vkGet*ProcAddr`, with a compile-time check that each hook has exactly the prototype of its
//!   `PFN_` type. An aliased entry names one hook, generic over `const ALIAS: bool`: `false`
//!   answers the core name, `true` the alias.

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

/// The next layer's functions of a core name and its alias.
#[derive(Clone, Copy)]
pub struct Aliased<F> {
    pub core: Option<F>,
    pub alias: Option<F>,
}

impl<F: Copy> Aliased<F> {
    /// The function of the name the application called: the core name, or (`alias`) the alias.
    pub fn get(&self, alias: bool) -> Option<F> {
        if alias {
            self.alias
        } else {
            self.core
        }
    }
}

/// The slot type of one next-table entry.
macro_rules! next_slot {
    ($pfn:ident) => { Option<ash::vk::$pfn> };
    ($pfn:ident, $alias:ident) => { $crate::hook_table::Aliased<ash::vk::$pfn> };
}

/// Resolves one next-table entry through `$get`.
macro_rules! next_load {
    ($get:ident, $pfn:ident, $name:ident) => {
        $crate::ffi::cast_next!($get($crate::hook_table::cname!($name)), ash::vk::$pfn)
    };
    ($get:ident, $pfn:ident, $name:ident, $alias:ident) => {
        $crate::hook_table::Aliased {
            core: $crate::ffi::cast_next!($get($crate::hook_table::cname!($name)), ash::vk::$pfn),
            alias: $crate::ffi::cast_next!($get($crate::hook_table::cname!($alias)), ash::vk::$pfn),
        }
    };
}

/// Generates a next-dispatch struct: one slot per entry, named after its (core) name.
macro_rules! next_table {
    (
        $(#[$meta:meta])*
        pub struct $Table:ident { $( $name:ident $(| $alias:ident)? : $pfn:ident ),* $(,)? }
    ) => {
        $(#[$meta])*
        // Some entries exist only for the lookup (the layer obtains vkCreate* through the link).
        #[allow(non_snake_case, dead_code)]
        pub struct $Table {
            $( pub $name: $crate::hook_table::next_slot!($pfn $(, $alias)?), )*
        }

        impl $Table {
            /// Resolves every entry through `get` (the next layer's `vkGet*ProcAddr`).
            pub fn load(mut get: impl FnMut(&::std::ffi::CStr) -> ash::vk::PFN_vkVoidFunction) -> Self {
                $Table { $( $name: $crate::hook_table::next_load!(get, $pfn, $name $(, $alias)?), )* }
            }
        }
    };
}

/// One entry of a hook lookup: returns the hook from the enclosing function when `$n` names it.
macro_rules! hook_entry {
    ($n:ident, $pfn:ident, [$($hook:tt)*], $name:ident) => {
        const _: ash::vk::$pfn = $($hook)*;
        if $n == stringify!($name).as_bytes() {
            return $crate::ffi::void_fn::<ash::vk::$pfn>($($hook)*);
        }
    };
    ($n:ident, $pfn:ident, [$($hook:tt)*], $name:ident, $alias:ident) => {
        const _: ash::vk::$pfn = $($hook)*::<false>;
        const _: ash::vk::$pfn = $($hook)*::<true>;
        if $n == stringify!($name).as_bytes() {
            return $crate::ffi::void_fn::<ash::vk::$pfn>($($hook)*::<false>);
        }
        if $n == stringify!($alias).as_bytes() {
            return $crate::ffi::void_fn::<ash::vk::$pfn>($($hook)*::<true>);
        }
    };
}

/// Generates a name → hook lookup. Entries come in groups, each answered only while its
/// condition holds (a setting that turns a concern off leaves its entry points to the layers
/// below).
macro_rules! hook_table {
    (
        $(#[$meta:meta])*
        pub fn $lookup:ident {
            $( when ($gate:expr) {
                $( $name:ident $(| $alias:ident)? : $pfn:ident => $($hook:ident)::+ ),* $(,)?
            } )*
        }
    ) => {
        $(#[$meta])*
        pub fn $lookup(name: &[u8]) -> ash::vk::PFN_vkVoidFunction {
            $(
                if $gate {
                    $( $crate::hook_table::hook_entry!(name, $pfn, [$($hook)::+], $name $(, $alias)?); )*
                }
            )*
            None
        }
    };
}

pub(crate) use {cname, hook_entry, hook_table, next_load, next_slot, next_table};
