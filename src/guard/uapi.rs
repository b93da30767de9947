//! Kernel uapi items that `libc`, `nix` and `linux-raw-sys` lack (written by hand, here only).
