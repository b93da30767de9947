//! Which memory the device may write (docs/design.md, "Which memory the device may write"). The
//! device writes host-visible memory only through a resource bound to it whose usage allows a
//! device write, or memory shared outside the device. A shadow of memory nobody else can write
//! needs no refresh: it is reused as it is across unmap and map, and skipped at the host
//! synchronisation points. Conservative: usage bits not known to be read-only count as writes,
//! and so does every allocation-chain structure not known to be harmless.

use ash::vk;

use super::*;
use crate::ffi::slice;
use vkdirty::session::Resource;

/// Buffer usages (`VkBufferUsageFlags2`, whose low 32 bits are `VkBufferUsageFlags`) through
/// which the device only reads: copy source, uniform and uniform texel, index, vertex, indirect,
/// conditional rendering, shader binding table, video decode source, acceleration-structure and
/// micromap build inputs, descriptor buffers. Everything else (transfer destination, storage and
/// storage texel, device address, transform feedback and its counters, acceleration-structure and
/// micromap storage, video destinations, preprocess and scratch buffers, unknown bits) is a write.
pub const BUFFER_READ_ONLY: u64 = 0x1 // TRANSFER_SRC
    | 0x4 // UNIFORM_TEXEL_BUFFER
    | 0x10 // UNIFORM_BUFFER
    | 0x40 // INDEX_BUFFER
    | 0x80 // VERTEX_BUFFER
    | 0x100 // INDIRECT_BUFFER
    | 0x200 // CONDITIONAL_RENDERING_EXT
    | 0x400 // SHADER_BINDING_TABLE_KHR
    | 0x2000 // VIDEO_DECODE_SRC_KHR
    | 0x8_0000 // ACCELERATION_STRUCTURE_BUILD_INPUT_READ_ONLY_KHR
    | 0x20_0000 // SAMPLER_DESCRIPTOR_BUFFER_EXT
    | 0x40_0000 // RESOURCE_DESCRIPTOR_BUFFER_EXT
    | 0x80_0000 // MICROMAP_BUILD_INPUT_READ_ONLY_EXT
    | 0x400_0000; // PUSH_DESCRIPTORS_DESCRIPTOR_BUFFER_EXT

/// Image usages through which the device only reads: copy source, sampled, fragment shading rate
/// and fragment density map attachments. Attachments (input attachments too: a feedback loop
/// can write them), storage, copy destination, host transfer (`vkCopyMemoryToImageEXT` writes the
/// memory from the host, not through the mapping), video and unknown bits are writes.
pub const IMAGE_READ_ONLY: u32 = 0x1 // TRANSFER_SRC
    | 0x4 // SAMPLED
    | 0x100 // FRAGMENT_SHADING_RATE_ATTACHMENT_KHR
    | 0x200; // FRAGMENT_DENSITY_MAP_EXT

/// Allocation-chain structures that let nobody else write the memory. Any other (export,
/// import, unknown) marks the allocation as written by others.
const HARMLESS_ALLOCATION_CHAIN: [vk::StructureType; 5] = [
    vk::StructureType::MEMORY_ALLOCATE_FLAGS_INFO,
    vk::StructureType::MEMORY_DEDICATED_ALLOCATE_INFO,
    vk::StructureType::MEMORY_PRIORITY_ALLOCATE_INFO_EXT,
    vk::StructureType::MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO,
    vk::StructureType::DEDICATED_ALLOCATION_MEMORY_ALLOCATE_INFO_NV,
];

/// Device extensions that bind device memory to objects other than buffers and images (video
/// sessions, tensors, data-graph sessions) or hand it to another party: with one of them enabled,
/// every allocation of the device counts as written by the device.
pub const BINDS_OTHER_MEMORY: [&str; 4] =
    ["VK_KHR_video_queue", "VK_ARM_tensors", "VK_ARM_data_graph", "VK_NV_external_memory_rdma"];

/// Whether a buffer with this usage can never be written by the device.
pub fn buffer_read_only(usage: u64, flags: vk::BufferCreateFlags) -> bool {
    usage & !BUFFER_READ_ONLY == 0 && !flags.contains(vk::BufferCreateFlags::SPARSE_BINDING)
}

/// Whether an image with this usage can never be written by the device.
pub fn image_read_only(usage: vk::ImageUsageFlags, flags: vk::ImageCreateFlags) -> bool {
    usage.as_raw() & !IMAGE_READ_ONLY == 0 && !flags.contains(vk::ImageCreateFlags::SPARSE_BINDING)
}

/// Whether an allocation made with this create info may be written by someone other than the
/// device's bound resources (exported, imported, or a structure not known to be harmless).
///
/// # Safety
/// `info` has a valid `pNext` chain.
pub unsafe fn shared_allocation(info: &vk::MemoryAllocateInfo<'_>) -> bool {
    let mut p = info.p_next as *const vk::BaseInStructure<'_>;
    while !p.is_null() {
        // SAFETY: every element of a valid chain starts with sType/pNext (caller contract).
        let b = unsafe { &*p };
        if !HARMLESS_ALLOCATION_CHAIN.contains(&b.s_type) {
            return true;
        }
        p = b.p_next;
    }
    false
}

/// The buffer usage of a create info: `VkBufferUsageFlags2CreateInfoKHR` when chained.
///
/// # Safety
/// `ci` has a valid `pNext` chain.
pub unsafe fn buffer_usage(ci: &vk::BufferCreateInfo<'_>) -> u64 {
    // SAFETY: caller contract.
    let u2 = unsafe { crate::ffi::chain_find(ci.p_next, vk::StructureType::BUFFER_USAGE_FLAGS_2_CREATE_INFO_KHR) };
    if u2.is_null() {
        u64::from(ci.usage.as_raw())
    } else {
        // SAFETY: the sType says which struct this is.
        unsafe { (*(u2 as *const vk::BufferUsageFlags2CreateInfoKHR<'_>)).usage.as_raw() }
    }
}

impl Capture {
    /// A buffer or image was created on `dev` (`read_only`: its usage allows no device write).
    pub fn resource_created(&self, dev: &DeviceState, r: Resource, read_only: bool) {
        let device = dev.handle.as_raw();
        self.device(device).lock().resource_created(device, r, read_only);
    }

    pub fn resource_destroyed(&self, dev: &DeviceState, r: Resource) {
        let device = dev.handle.as_raw();
        self.device(device).lock().resource_destroyed(device, r);
    }

    /// `r` is being bound to `memory`.
    pub fn bound(&self, dev: &DeviceState, r: Resource, memory: vk::DeviceMemory) {
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let mut mem = d.lock();
        let regions = mem.bound((device, memory.as_raw()), r);
        self.device_may_write(&regions);
    }

    /// Tells the guard that the device may write these regions from now on (a flag newly set),
    /// with the device's lock held: every submit that can use the binding collects after this,
    /// so its predictions take snapshots again (docs/design.md, "Trusted predictions").
    fn device_may_write(&self, regions: &[RegionId]) {
        for &r in regions {
            match self.guards.device_writes(r) {
                Ok(()) | Err(GuardError::UnknownRegion(_)) => {}
                Err(e) => log::once(vkdirty::config::LogLevel::Error, &format!("marking device writes failed: {e}")),
            }
        }
    }

    /// `vkQueueBindSparse`: every memory it binds may be written by the device.
    pub fn sparse_bound(&self, dev: &DeviceState, binds: &[vk::BindSparseInfo<'_>]) {
        let device = dev.handle.as_raw();
        let d = self.device(device);
        let mut mem = d.lock();
        let mut regions = Vec::new();
        for b in binds {
            // SAFETY: the counts and arrays of a valid VkBindSparseInfo.
            let (buffers, opaque, images) = unsafe {
                (
                    slice(b.p_buffer_binds, b.buffer_bind_count),
                    slice(b.p_image_opaque_binds, b.image_opaque_bind_count),
                    slice(b.p_image_binds, b.image_bind_count),
                )
            };
            let mut mark = |m: vk::DeviceMemory| regions.extend(mem.device_writes((device, m.as_raw())));
            for i in buffers {
                // SAFETY: as above.
                unsafe { slice(i.p_binds, i.bind_count) }.iter().for_each(|s| mark(s.memory));
            }
            for i in opaque {
                // SAFETY: as above.
                unsafe { slice(i.p_binds, i.bind_count) }.iter().for_each(|s| mark(s.memory));
            }
            for i in images {
                // SAFETY: as above.
                unsafe { slice(i.p_binds, i.bind_count) }.iter().for_each(|s| mark(s.memory));
            }
        }
        self.device_may_write(&regions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_usages_leave_memory_unwritten() {
        let b = |u: vk::BufferUsageFlags| buffer_read_only(u64::from(u.as_raw()), vk::BufferCreateFlags::empty());
        assert!(b(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::VERTEX_BUFFER));
        assert!(b(vk::BufferUsageFlags::UNIFORM_BUFFER | vk::BufferUsageFlags::INDIRECT_BUFFER));
        for w in [
            vk::BufferUsageFlags::TRANSFER_DST,
            vk::BufferUsageFlags::STORAGE_BUFFER,
            vk::BufferUsageFlags::STORAGE_TEXEL_BUFFER,
            vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS,
            vk::BufferUsageFlags::TRANSFORM_FEEDBACK_BUFFER_EXT,
            vk::BufferUsageFlags::TRANSFORM_FEEDBACK_COUNTER_BUFFER_EXT,
            vk::BufferUsageFlags::ACCELERATION_STRUCTURE_STORAGE_KHR,
            vk::BufferUsageFlags::VIDEO_DECODE_DST_KHR,
            vk::BufferUsageFlags::VIDEO_ENCODE_DST_KHR,
            vk::BufferUsageFlags::MICROMAP_STORAGE_EXT,
        ] {
            assert!(!b(vk::BufferUsageFlags::TRANSFER_SRC | w), "{w:?}");
        }
        // Bits this list does not know (here from VkBufferUsageFlags2) count as writes.
        assert!(!buffer_read_only(1 << 40, vk::BufferCreateFlags::empty()));
        assert!(!buffer_read_only(0x1, vk::BufferCreateFlags::SPARSE_BINDING));
        let i = |u: vk::ImageUsageFlags| image_read_only(u, vk::ImageCreateFlags::empty());
        assert!(i(vk::ImageUsageFlags::SAMPLED | vk::ImageUsageFlags::TRANSFER_SRC));
        for w in [
            vk::ImageUsageFlags::TRANSFER_DST,
            vk::ImageUsageFlags::STORAGE,
            vk::ImageUsageFlags::COLOR_ATTACHMENT,
            vk::ImageUsageFlags::DEPTH_STENCIL_ATTACHMENT,
            vk::ImageUsageFlags::INPUT_ATTACHMENT,
            vk::ImageUsageFlags::HOST_TRANSFER_EXT,
        ] {
            assert!(!i(vk::ImageUsageFlags::SAMPLED | w), "{w:?}");
        }
    }

    #[test]
    fn exported_imported_and_unknown_allocations_are_shared() {
        let flags = vk::MemoryAllocateFlagsInfo::default();
        let info =
            vk::MemoryAllocateInfo { p_next: &flags as *const _ as *const std::ffi::c_void, ..Default::default() };
        // SAFETY: a valid chain of one struct.
        assert!(!unsafe { shared_allocation(&info) });
        // SAFETY: no chain.
        assert!(!unsafe { shared_allocation(&vk::MemoryAllocateInfo::default()) });
        let export = vk::ExportMemoryAllocateInfo {
            p_next: &flags as *const _ as *const std::ffi::c_void,
            ..Default::default()
        };
        let info =
            vk::MemoryAllocateInfo { p_next: &export as *const _ as *const std::ffi::c_void, ..Default::default() };
        // SAFETY: a valid chain of two structs.
        assert!(unsafe { shared_allocation(&info) });
        let import = vk::ImportMemoryFdInfoKHR::default();
        let info =
            vk::MemoryAllocateInfo { p_next: &import as *const _ as *const std::ffi::c_void, ..Default::default() };
        // SAFETY: a valid chain of one struct.
        assert!(unsafe { shared_allocation(&info) });
    }
}
