//! Settings, read from `VKDIRTY_*` environment variables (and `debug.vkdirty.*` properties on
//! Android).
