//! host-import's decisions without a driver.

// Cases start from the default and change the one field they are about.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use vk::MemoryPropertyFlags as M;

#[test]
fn eligibility_by_memory_type() {
    // NVIDIA discrete: 0 and 1 device-local, 2 and 3 system memory, 4 the BAR.
    let nv = [
        M::DEVICE_LOCAL,
        M::DEVICE_LOCAL,
        M::HOST_VISIBLE | M::HOST_COHERENT,
        M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED,
        M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT,
    ];
    assert_eq!(eligible_types(&nv, false), 0b01100);
    assert!(type_refusal(nv[4], 4, false).unwrap().contains("device-local"));
    assert!(type_refusal(nv[0], 0, false).unwrap().contains("not host-visible"));
    // lavapipe: one type, device-local and host-visible, on a CPU device.
    let lvp = [M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED];
    assert!(has_no_video_memory(vk::PhysicalDeviceType::CPU));
    assert!(has_no_video_memory(vk::PhysicalDeviceType::INTEGRATED_GPU));
    assert!(!has_no_video_memory(vk::PhysicalDeviceType::DISCRETE_GPU));
    assert_eq!(eligible_types(&lvp, true), 1);
    assert_eq!(eligible_types(&lvp, false), 0);
    assert_eq!(eligible_types(&[M::LAZILY_ALLOCATED | M::DEVICE_LOCAL, M::PROTECTED | M::DEVICE_LOCAL], true), 0);
}

fn plan(chain: *const c_void) -> ChainPlan {
    // SAFETY: the chains below are valid and live across the call.
    unsafe { plan_chain(chain) }
}

fn ptr<T>(t: &T) -> *const c_void {
    t as *const T as *const c_void
}

#[test]
fn allocation_chains() {
    use ChainPlan::*;
    assert_eq!(plan(std::ptr::null()), Keep);
    // Kept: flags, priority, a dedicated struct naming nothing, an unknown struct.
    let flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
    let mut prio = vk::MemoryPriorityAllocateInfoEXT::default().priority(0.5);
    prio.p_next = ptr(&flags);
    let mut none = vk::MemoryDedicatedAllocateInfo::default();
    none.p_next = ptr(&prio);
    assert_eq!(plan(ptr(&none)), Keep);
    let mut unknown = vk::ExportMetalObjectCreateInfoEXT::default();
    unknown.p_next = ptr(&none);
    assert_eq!(plan(ptr(&unknown)), Keep);
    // A dedicated image at the end of a chain.
    let img = vk::MemoryDedicatedAllocateInfo::default().image(vk::Image::from_raw(7));
    let mut head = vk::MemoryPriorityAllocateInfoEXT::default();
    head.p_next = ptr(&img);
    assert_eq!(plan(ptr(&head)), Refuse("dedicated image allocation"));
    // A dedicated buffer: dropped from a chain of known structures only.
    let mut buf = vk::MemoryDedicatedAllocateInfo::default().buffer(vk::Buffer::from_raw(7));
    assert_eq!(plan(ptr(&buf)), DropDedicated(vk::Buffer::from_raw(7)));
    buf.p_next = ptr(&prio);
    assert_eq!(plan(ptr(&buf)), DropDedicated(vk::Buffer::from_raw(7)));
    let mut odd = vk::ExportMetalObjectCreateInfoEXT::default();
    odd.p_next = ptr(&buf);
    assert_eq!(plan(ptr(&odd)), Refuse("dedicated buffer allocation"));
    let export = vk::ExportMemoryAllocateInfo::default().handle_types(vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD);
    assert_eq!(plan(ptr(&export)), Refuse("the application exports it"));
    let fd = vk::ImportMemoryFdInfoKHR::default().fd(3);
    assert_eq!(plan(ptr(&fd)), Refuse("the application imports it"));
    let own = vk::ImportMemoryHostPointerInfoEXT::default();
    assert_eq!(plan(ptr(&own)), Refuse("the application imports it"));
    let cap = vk::MemoryOpaqueCaptureAddressAllocateInfo::default().opaque_capture_address(0x1000);
    assert_eq!(plan(ptr(&cap)), Refuse("replayed device address"));
    let zero = vk::MemoryOpaqueCaptureAddressAllocateInfo::default();
    assert_eq!(plan(ptr(&zero)), Keep);
    let replay = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS_CAPTURE_REPLAY);
    assert_eq!(plan(ptr(&replay)), Refuse("device address capture/replay"));
}

#[test]
fn copied_chain_keeps_everything_but_the_dedicated_structure() {
    let flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS).device_mask(1);
    let mut ded = vk::MemoryDedicatedAllocateInfo::default().buffer(vk::Buffer::from_raw(9));
    ded.p_next = ptr(&flags);
    let mut prio = vk::MemoryPriorityAllocateInfoEXT::default().priority(0.25);
    prio.p_next = ptr(&ded);
    // SAFETY: a valid chain of known structures.
    let mut c = unsafe { CopiedChain::copy(ptr(&prio)) };
    let head = c.link();
    let mut seen = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: the copied chain, alive in `c`.
        let b = unsafe { &*(p as *const vk::BaseInStructure<'_>) };
        seen.push(b.s_type);
        p = b.p_next.cast();
    }
    assert_eq!(
        seen,
        vec![vk::StructureType::MEMORY_ALLOCATE_FLAGS_INFO, vk::StructureType::MEMORY_PRIORITY_ALLOCATE_INFO_EXT]
    );
    assert_eq!(c.flags.map(|f| (f.flags, f.device_mask)), Some((vk::MemoryAllocateFlags::DEVICE_ADDRESS, 1)));
    assert_eq!(c.priority.map(|p| p.priority), Some(0.25));
    // SAFETY: an empty chain.
    assert!(unsafe { CopiedChain::copy(std::ptr::null()) }.link().is_null());
}

#[test]
fn pending_resources_block_their_memory_types() {
    let mut p = PendingSet::default();
    assert_eq!(p.blocking(0), None);
    p.add(Resource::Image(1), 0b011, "x");
    p.add(Resource::Buffer(1), 0b110, "y");
    assert_eq!(p.blocking(0), Some(("image", "x")));
    assert!(p.blocking(1).is_some());
    assert_eq!(p.blocking(2), Some(("buffer", "y")));
    assert_eq!(p.blocking(3), None);
    assert_eq!(p.blocking(40), None);
    // Re-adding the same resource does not count it twice.
    p.add(Resource::Image(1), 0b011, "x");
    assert!(p.remove(Resource::Image(1)).is_some());
    assert!(p.remove(Resource::Image(1)).is_none());
    assert_eq!(p.blocking(0), None);
    assert_eq!(p.blocking(1), Some(("buffer", "y")));
    p.remove(Resource::Buffer(1));
    assert!((0..32).all(|t| p.blocking(t).is_none()));
    // Every type (disjoint images).
    p.add(Resource::Image(9), !0, "z");
    assert!((0..32).all(|t| p.blocking(t).is_some()));
}

#[test]
fn external_resources_must_keep_their_memory_types() {
    // Strict: nothing may be hidden.
    assert_eq!(keeps_types("buffers", 3, 0, 0b11111, 0b11111, 0), Ok(()));
    assert!(keeps_types("buffers", 3, 0, 0b11111, 0b01111, 0).is_err());
    assert!(keeps_types("buffers", 3, 0, 0b11111, 0b01100, 0).is_err());
    // NVIDIA 580 (measured): external buffers lose type 4, device-local and host-visible.
    assert_eq!(keeps_types("buffers", 3, 0, 0b11111, 0b01111, 0b10000), Ok(()));
    // Losing any other type, or gaining one, or losing everything, is refused.
    assert!(keeps_types("buffers", 3, 0, 0b11111, 0b00111, 0b10000).is_err());
    assert!(keeps_types("images", 3, 0, 0b00011, 0b01111, 0b10000).is_err());
    assert!(keeps_types("images", 3, 0, 0b10000, 0, 0b10000).is_err());
}

#[test]
fn only_device_local_host_visible_types_may_be_hidden() {
    use vk::MemoryPropertyFlags as M;
    let nvidia = [
        M::empty(),
        M::DEVICE_LOCAL,
        M::HOST_VISIBLE | M::HOST_COHERENT,
        M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED,
        M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT,
    ];
    assert_eq!(hideable_types(&nvidia, HostImport::On), 0b10000);
    assert_eq!(hideable_types(&nvidia, HostImport::Strict), 0);
    assert_eq!(hideable_types(&nvidia, HostImport::Off), 0);
}

#[test]
fn external_properties_and_rounding() {
    let mut e = vk::ExternalMemoryProperties {
        external_memory_features: vk::ExternalMemoryFeatureFlags::IMPORTABLE,
        compatible_handle_types: HOST_ALLOCATION,
        ..Default::default()
    };
    assert!(importable(&e));
    e.external_memory_features |= vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY;
    assert!(!importable(&e));
    e.external_memory_features = vk::ExternalMemoryFeatureFlags::EXPORTABLE;
    assert!(!importable(&e));
    e.external_memory_features = vk::ExternalMemoryFeatureFlags::IMPORTABLE;
    e.compatible_handle_types = vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD;
    assert!(!importable(&e));
    assert_eq!(round_up(1, 4096), Some(4096));
    assert_eq!(round_up(4096, 4096), Some(4096));
    assert_eq!(round_up(4097, 65536), Some(65536));
    assert_eq!(round_up(u64::MAX - 10, 4096), None);
}

#[test]
fn host_blocks_are_aligned_and_writable() {
    for align in [4096usize, 65536, 1 << 21] {
        let b = HostBlock::new(3 * 4096, align.max(vkdirty::guard::page_size())).expect("mmap");
        assert_eq!(b.ptr() as usize % align, 0);
        // SAFETY: the block is mapped read-write.
        unsafe {
            std::ptr::write_bytes(b.ptr(), 0xab, b.len);
            assert_eq!(*b.ptr().add(b.len - 1), 0xab);
        }
    }
}
