//! `--report-memory`: what the driver offers host-import, as JSON lines on stdout. For each
//! buffer usage a real application uses, the memory types of a plain buffer and of the same
//! buffer created external with `HOST_ALLOCATION_BIT_EXT` (the difference decides whether the
//! layer may make such buffers external without changing where the application's data goes).

use crate::vkctx::{Vk, VkError};
use ash::vk;
use serde_json::json;

const HOST: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

pub fn report(v: &Vk) -> Result<(), VkError> {
    let e = |what: &str, r: vk::Result| VkError(format!("{what}: {r:?}"));
    // SAFETY: a valid instance.
    let pdev = *unsafe { v.instance.enumerate_physical_devices() }
        .map_err(|r| e("vkEnumeratePhysicalDevices", r))?
        .first()
        .ok_or_else(|| VkError("no physical device".into()))?;
    let types: Vec<_> = (0..v.mem_props.memory_type_count as usize)
        .map(|i| {
            let t = v.mem_props.memory_types[i];
            json!({"type": i, "heap": t.heap_index, "flags": format!("{:?}", t.property_flags)})
        })
        .collect();
    println!("{}", json!({"kind": "memory_types", "device": v.device_name, "types": types}));
    // SAFETY: as above.
    let exts = unsafe { v.instance.enumerate_device_extension_properties(pdev) }
        .map_err(|r| e("vkEnumerateDeviceExtensionProperties", r))?;
    let name = ash::ext::external_memory_host::NAME;
    if !exts.iter().any(|x| x.extension_name_as_c_str() == Ok(name)) {
        println!("{}", json!({"kind": "external_memory_host", "supported": false}));
        return Ok(());
    }
    // A second device with the extension, so external buffers may be created.
    let prio = [1.0f32];
    let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(v.queue_family).queue_priorities(&prio)];
    let names = [name.as_ptr()];
    let dci = vk::DeviceCreateInfo::default().queue_create_infos(&qci).enabled_extension_names(&names);
    // SAFETY: valid physical device; the create info lives across the call.
    let dev = unsafe { v.instance.create_device(pdev, &dci, None) }.map_err(|r| e("vkCreateDevice", r))?;
    use vk::BufferUsageFlags as U;
    let usages = [
        ("staging", U::TRANSFER_SRC),
        ("readback", U::TRANSFER_DST),
        ("uniform", U::UNIFORM_BUFFER),
        ("uniform+dst", U::UNIFORM_BUFFER | U::TRANSFER_DST),
        ("vertex", U::VERTEX_BUFFER),
        ("vertex+index+dst", U::VERTEX_BUFFER | U::INDEX_BUFFER | U::TRANSFER_DST),
        ("storage", U::STORAGE_BUFFER),
        ("storage+src+dst", U::STORAGE_BUFFER | U::TRANSFER_SRC | U::TRANSFER_DST),
        ("indirect", U::INDIRECT_BUFFER),
        ("workload", U::TRANSFER_SRC | U::TRANSFER_DST),
    ];
    for (label, usage) in usages {
        let q = vk::PhysicalDeviceExternalBufferInfo { usage, handle_type: HOST, ..Default::default() };
        let mut out = vk::ExternalBufferProperties::default();
        // SAFETY: valid physical device; the structs live across the call.
        unsafe { v.instance.get_physical_device_external_buffer_properties(pdev, &q, &mut out) };
        let p = out.external_memory_properties;
        let bits = |external: bool| -> Option<u32> {
            let mut ext = vk::ExternalMemoryBufferCreateInfo::default().handle_types(HOST);
            let mut ci = vk::BufferCreateInfo::default().size(1 << 20).usage(usage);
            if external {
                ci = ci.push_next(&mut ext);
            }
            // SAFETY: a valid device and create info; the buffer is destroyed below.
            unsafe {
                let b = dev.create_buffer(&ci, None).ok()?;
                let r = dev.get_buffer_memory_requirements(b);
                dev.destroy_buffer(b, None);
                Some(r.memory_type_bits)
            }
        };
        println!(
            "{}",
            json!({"kind": "buffer", "usage": label, "usage_bits": format!("{:#x}", usage.as_raw()),
                   "features": format!("{:?}", p.external_memory_features),
                   "compatible": format!("{:?}", p.compatible_handle_types),
                   "plain": bits(false).map(|b| format!("{b:#b}")), "external": bits(true).map(|b| format!("{b:#b}"))})
        );
    }
    // SAFETY: nothing created on it is alive.
    unsafe { dev.destroy_device(None) };
    Ok(())
}

fn tool_json(t: &vk::PhysicalDeviceToolProperties<'_>) -> serde_json::Value {
    let s = |c: Result<&std::ffi::CStr, _>| c.map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    json!({
        "name": s(t.name_as_c_str()),
        "version": s(t.version_as_c_str()),
        "purposes": format!("{:?}", t.purposes),
        "description": s(t.description_as_c_str()),
        "layer": s(t.layer_as_c_str()),
    })
}

/// `--list-tools`: every tool of `vkGetPhysicalDeviceToolProperties` (core in 1.3, else the EXT
/// entry point), one JSON line each, in the order reported.
pub fn list_tools(v: &Vk) -> Result<(), VkError> {
    let e = |what: &str, r: vk::Result| VkError(format!("{what}: {r:?}"));
    let tools: Vec<serde_json::Value> = if v.api >= vk::API_VERSION_1_3 {
        // SAFETY: a valid physical device of this 1.3 instance; the two-call idiom.
        unsafe {
            let n = v
                .instance
                .get_physical_device_tool_properties_len(v.pdev)
                .map_err(|r| e("vkGetPhysicalDeviceToolProperties", r))?;
            let mut out = vec![vk::PhysicalDeviceToolProperties::default(); n];
            v.instance
                .get_physical_device_tool_properties(v.pdev, &mut out)
                .map_err(|r| e("vkGetPhysicalDeviceToolProperties", r))?;
            out.iter().map(tool_json).collect()
        }
    } else {
        let ext = ash::ext::tooling_info::Instance::new(&v.entry, &v.instance);
        // SAFETY: as above; the entry point comes from the instance.
        let out = unsafe { ext.get_physical_device_tool_properties(v.pdev) }
            .map_err(|r| e("vkGetPhysicalDeviceToolPropertiesEXT", r))?;
        out.iter().map(tool_json).collect()
    };
    for t in tools {
        println!("{t}");
    }
    Ok(())
}
