//! `VK_LAYER_VKDIRTY_capture`: translates the Vulkan ABI into calls on the vkdirty core.
#![deny(unsafe_op_in_unsafe_fn)]
