//! Buffers and images: which may live in imported memory (the hooks are in `hooks/resources.rs`).

use super::*;

impl Active {
    /// Whether a buffer with this create info may be created external, so it can be bound to
    /// imported memory: the driver allows it, and it keeps the memory types the application
    /// would see without the layer.
    ///
    /// # Safety
    /// `ci` is a valid `VkBufferCreateInfo` with a valid chain.
    pub unsafe fn buffer_importable(
        &self,
        next: &DeviceNext,
        ci: &vk::BufferCreateInfo<'_>,
    ) -> Result<(), &'static str> {
        use vk::StructureType as S;
        // SAFETY: caller contract.
        if !unsafe { chain_find(ci.p_next, S::EXTERNAL_MEMORY_BUFFER_CREATE_INFO) }.is_null() {
            return Err("the application chose its external handle types");
        }
        // A replayed address belongs to one buffer: no trial buffer may take it.
        let replay = vk::BufferCreateFlags::DEVICE_ADDRESS_CAPTURE_REPLAY
            | vk::BufferCreateFlags::DESCRIPTOR_BUFFER_CAPTURE_REPLAY_EXT;
        if ci.flags.intersects(replay) {
            return Err("capture/replay");
        }
        // SAFETY: caller contract.
        let usage2 = unsafe { chain_find(ci.p_next, S::BUFFER_USAGE_FLAGS_2_CREATE_INFO_KHR) };
        let mut u2 = vk::BufferUsageFlags2CreateInfoKHR::default();
        let usage = if usage2.is_null() {
            u64::from(ci.usage.as_raw())
        } else {
            // SAFETY: the sType says which struct this is.
            u2.usage = unsafe { (*(usage2 as *const vk::BufferUsageFlags2CreateInfoKHR<'_>)).usage };
            u2.usage.as_raw()
        };
        let key = (ci.flags.as_raw(), usage);
        if let Some(&verdict) = self.st.lock().buffer_ok.get(&key) {
            return verdict;
        }
        let mut q = vk::PhysicalDeviceExternalBufferInfo {
            flags: ci.flags,
            usage: ci.usage,
            handle_type: HOST_ALLOCATION,
            ..Default::default()
        };
        if !usage2.is_null() {
            q.p_next = &u2 as *const vk::BufferUsageFlags2CreateInfoKHR<'_> as *const c_void;
        }
        let mut out = vk::ExternalBufferProperties::default();
        // SAFETY: valid physical device; the structs live across the call.
        unsafe { (self.phys.external_buffer)(self.physical, &q, &mut out) };
        let verdict = if importable(&out.external_memory_properties) {
            let ext = vk::ExternalMemoryBufferCreateInfo {
                p_next: ci.p_next,
                handle_types: HOST_ALLOCATION,
                ..Default::default()
            };
            let mut eci = *ci;
            eci.p_next = &ext as *const vk::ExternalMemoryBufferCreateInfo<'_> as *const c_void;
            // SAFETY: the application's valid create info, and the same with a valid struct added.
            let (plain, external) = unsafe { (self.buffer_bits(next, ci), self.buffer_bits(next, &eci)) };
            let (Some(plain), Some(external)) = (plain, external) else {
                // Not remembered: a trial buffer could not be made this time.
                return Err("no trial buffer");
            };
            keeps_types("buffers", usage, ci.flags.as_raw(), plain, external, self.may_hide)
        } else {
            Err("the driver cannot bind it to host memory")
        };
        self.st.lock().buffer_ok.insert(key, verdict);
        verdict
    }

    /// The memory types of a trial buffer made from `ci` (destroyed again).
    ///
    /// # Safety
    /// `ci` is a valid `VkBufferCreateInfo` for this device.
    pub(super) unsafe fn buffer_bits(&self, next: &DeviceNext, ci: &vk::BufferCreateInfo<'_>) -> Option<u32> {
        let (create, destroy, reqs) =
            (next.vkCreateBuffer?, next.vkDestroyBuffer?, next.vkGetBufferMemoryRequirements?);
        let mut b = vk::Buffer::null();
        let mut r = vk::MemoryRequirements::default();
        // SAFETY: caller contract; the trial buffer is this function's own.
        unsafe {
            if create(self.device, ci, std::ptr::null(), &mut b) != vk::Result::SUCCESS {
                return None;
            }
            reqs(self.device, b, &mut r);
            destroy(self.device, b, std::ptr::null());
        }
        Some(r.memory_type_bits)
    }

    /// Whether an image with this create info may be created external (as for buffers).
    ///
    /// # Safety
    /// `ci` is a valid `VkImageCreateInfo` with a valid chain.
    pub unsafe fn image_importable(&self, next: &DeviceNext, ci: &vk::ImageCreateInfo<'_>) -> Result<(), &'static str> {
        use vk::StructureType as S;
        for s in [S::EXTERNAL_MEMORY_IMAGE_CREATE_INFO, S::EXTERNAL_MEMORY_IMAGE_CREATE_INFO_NV] {
            // SAFETY: caller contract.
            if !unsafe { chain_find(ci.p_next, s) }.is_null() {
                return Err("the application chose its external handle types");
            }
        }
        // SAFETY: caller contract.
        if !unsafe { chain_find(ci.p_next, S::EXTERNAL_FORMAT_ANDROID) }.is_null() {
            return Err("external format");
        }
        // VUID-VkImageCreateInfo-pNext-01443: external images start undefined.
        if ci.initial_layout != vk::ImageLayout::UNDEFINED {
            return Err("preinitialized layout");
        }
        if ci.tiling == vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT {
            return Err("DRM format modifier tiling");
        }
        // Per-plane requirements; and a replayed descriptor belongs to one image.
        if ci
            .flags
            .intersects(vk::ImageCreateFlags::DISJOINT | vk::ImageCreateFlags::DESCRIPTOR_BUFFER_CAPTURE_REPLAY_EXT)
        {
            return Err("disjoint planes or capture/replay");
        }
        let key =
            (ci.format.as_raw(), ci.image_type.as_raw(), ci.tiling.as_raw(), ci.usage.as_raw(), ci.flags.as_raw());
        if let Some(&verdict) = self.st.lock().image_ok.get(&key) {
            return verdict;
        }
        let ext = vk::PhysicalDeviceExternalImageFormatInfo { handle_type: HOST_ALLOCATION, ..Default::default() };
        let q = vk::PhysicalDeviceImageFormatInfo2 {
            p_next: &ext as *const vk::PhysicalDeviceExternalImageFormatInfo<'_> as *const c_void,
            format: ci.format,
            ty: ci.image_type,
            tiling: ci.tiling,
            usage: ci.usage,
            flags: ci.flags,
            ..Default::default()
        };
        let mut eprops = vk::ExternalImageFormatProperties::default();
        let mut out = vk::ImageFormatProperties2 {
            p_next: &mut eprops as *mut vk::ExternalImageFormatProperties<'_> as *mut c_void,
            ..Default::default()
        };
        // SAFETY: valid physical device; the chains live across the call.
        let r = unsafe { (self.phys.image_format2)(self.physical, &q, &mut out) };
        let verdict = if r == vk::Result::SUCCESS && importable(&eprops.external_memory_properties) {
            let ext = vk::ExternalMemoryImageCreateInfo {
                p_next: ci.p_next,
                handle_types: HOST_ALLOCATION,
                ..Default::default()
            };
            let mut eci = *ci;
            eci.p_next = &ext as *const vk::ExternalMemoryImageCreateInfo<'_> as *const c_void;
            // SAFETY: the application's valid create info, and the same with a valid struct added.
            let (plain, external) = unsafe { (self.image_bits(next, ci), self.image_bits(next, &eci)) };
            let (Some(plain), Some(external)) = (plain, external) else {
                return Err("no trial image");
            };
            keeps_types("images", u64::from(ci.usage.as_raw()), ci.flags.as_raw(), plain, external, self.may_hide)
        } else {
            Err("the driver cannot bind it to host memory")
        };
        self.st.lock().image_ok.insert(key, verdict);
        verdict
    }

    /// The memory types of a trial image made from `ci` (destroyed again).
    ///
    /// # Safety
    /// `ci` is a valid `VkImageCreateInfo` for this device, not disjoint.
    pub(super) unsafe fn image_bits(&self, next: &DeviceNext, ci: &vk::ImageCreateInfo<'_>) -> Option<u32> {
        let (create, destroy, reqs) = (next.vkCreateImage?, next.vkDestroyImage?, next.vkGetImageMemoryRequirements?);
        let mut i = vk::Image::null();
        let mut r = vk::MemoryRequirements::default();
        // SAFETY: caller contract; the trial image is this function's own.
        unsafe {
            if create(self.device, ci, std::ptr::null(), &mut i) != vk::Result::SUCCESS {
                return None;
            }
            reqs(self.device, i, &mut r);
            destroy(self.device, i, std::ptr::null());
        }
        Some(r.memory_type_bits)
    }

    /// A resource that cannot be bound to imported memory was created.
    pub fn non_importable(&self, r: Resource, bits: u32, why: &'static str) {
        let mut st = self.st.lock();
        st.pending.add(r, bits, why);
        st.non_importable.insert(r, why);
    }

    /// A resource is being bound to `memory`.
    pub fn binding(&self, r: Resource, memory: vk::DeviceMemory) {
        let mut st = self.st.lock();
        st.pending.remove(r);
        let Some(&why) = st.non_importable.get(&r) else {
            return;
        };
        if st.imported.contains_key(&memory.as_raw()) {
            log::once(
                LogLevel::Warn,
                &format!(
                    "host-import: {} that cannot live in imported memory ({why}) is bound to memory imported \
                     before it was created; set VKDIRTY_HOST_IMPORT=0 if the application misbehaves",
                    if matches!(r, Resource::Image(_)) { "an image" } else { "a buffer" }
                ),
            );
        }
    }

    pub fn destroyed(&self, r: Resource) {
        let mut st = self.st.lock();
        st.pending.remove(r);
        st.non_importable.remove(&r);
    }
}
