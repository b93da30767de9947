use super::*;
use std::io::Write;

fn header(compression: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [FOURCC, 0, 1, 1, OPTION_COMPRESSION, compression] {
        v.extend(x.to_le_bytes());
    }
    v
}

fn block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
    v.extend((body.len() as u64).to_le_bytes());
    v.extend(ty.to_le_bytes());
    v.extend(body);
}

fn fill(memory: u64, offset: u64, len: u64, data: &[u8]) -> Vec<u8> {
    let mut b = ((1u32 << 16) | FILL_MEMORY_COMMAND).to_le_bytes().to_vec();
    for x in [7u64, memory, offset, len] {
        b.extend(x.to_le_bytes());
    }
    b.extend(data);
    b
}

fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("vkdirty-gfxr-unit-{}-{name}.gfxr", std::process::id()));
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn blocks_plain_and_lz4() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i / 64) as u8).collect();
    let mut f = header(1);
    let mut call = 0x1_1012u32.to_le_bytes().to_vec();
    call.extend(3u64.to_le_bytes());
    call.extend([1, 2, 3]);
    block(&mut f, FUNCTION_CALL_BLOCK, &call);
    block(&mut f, META_DATA_BLOCK, &fill(5, 64, 4096, &data));
    block(&mut f, META_DATA_BLOCK | COMPRESSED_BIT, &fill(5, 0, 4096, &lz4_flex::block::compress(&data)));
    let mut packed = 0x1_1015u32.to_le_bytes().to_vec();
    packed.extend(3u64.to_le_bytes());
    packed.extend(3u64.to_le_bytes());
    packed.extend(lz4_flex::block::compress(&[9, 9, 9]));
    block(&mut f, FUNCTION_CALL_BLOCK | COMPRESSED_BIT, &packed);
    block(&mut f, 1, &[0; 12]);
    let p = write("ok", &f);
    let mut r = GfxrReader::open(&p).unwrap();
    assert_eq!(r.compression, Compression::Lz4);
    assert_eq!(r.next_block().unwrap(), Some(Block::Call { id: call::QUEUE_SUBMIT, params: vec![1, 2, 3] }));
    assert_eq!(r.next_block().unwrap(), Some(Block::Fill { memory: 5, offset: 64, data: data.clone() }));
    assert_eq!(r.next_block().unwrap(), Some(Block::Fill { memory: 5, offset: 0, data }));
    assert_eq!(r.next_block().unwrap(), Some(Block::Call { id: call::ALLOCATE_MEMORY, params: vec![9, 9, 9] }));
    assert_eq!(r.next_block().unwrap(), Some(Block::Other { block_type: 1 }));
    assert_eq!(r.next_block().unwrap(), None);
    let s = summarize(&p).unwrap();
    assert_eq!((s.blocks, s.calls, s.submits, s.fill_commands, s.fill_bytes), (5, 2, 1, 2, 8192));
    // Cut inside the last block: an error naming where, not a panic.
    std::fs::write(&p, &f[..f.len() - 5]).unwrap();
    let mut r = GfxrReader::open(&p).unwrap();
    let err = std::iter::from_fn(|| r.next_block().transpose()).find_map(Result::err).unwrap();
    assert!(matches!(err, GfxrError::Corrupt { .. }), "{err}");
    let _ = std::fs::remove_file(&p);
}

/// gfxreconstruct's `GFXRECON_CAPTURE_COMPRESSION_TYPE=zlib` (zlib's compress2: zlib streams).
#[test]
fn zlib_blocks() {
    let data: Vec<u8> = (0..8192u32).map(|i| (i / 100) as u8).collect();
    let mut f = header(2);
    block(
        &mut f,
        META_DATA_BLOCK | COMPRESSED_BIT,
        &fill(7, 128, 8192, &miniz_oxide::deflate::compress_to_vec_zlib(&data, 6)),
    );
    let mut packed = 0x1_1015u32.to_le_bytes().to_vec();
    packed.extend(3u64.to_le_bytes());
    packed.extend(3u64.to_le_bytes());
    packed.extend(miniz_oxide::deflate::compress_to_vec_zlib(&[4, 5, 6], 6));
    block(&mut f, FUNCTION_CALL_BLOCK | COMPRESSED_BIT, &packed);
    // A block that decodes to more than its header says is damage, not a short read.
    block(
        &mut f,
        META_DATA_BLOCK | COMPRESSED_BIT,
        &fill(7, 0, 100, &miniz_oxide::deflate::compress_to_vec_zlib(&data, 6)),
    );
    let p = write("zlib", &f);
    let mut r = GfxrReader::open(&p).unwrap();
    assert_eq!(r.compression, Compression::Zlib);
    assert_eq!(r.next_block().unwrap(), Some(Block::Fill { memory: 7, offset: 128, data }));
    assert_eq!(r.next_block().unwrap(), Some(Block::Call { id: call::ALLOCATE_MEMORY, params: vec![4, 5, 6] }));
    assert!(matches!(r.next_block(), Err(GfxrError::Corrupt { .. })));
    assert!(summarize(&p).is_err());
    let _ = std::fs::remove_file(&p);
}

#[test]
fn bad_input_is_an_error() {
    let p = write("bad", b"NOPE000000000000");
    assert!(matches!(GfxrReader::open(&p), Err(GfxrError::BadMagic)));
    let mut f = header(2);
    block(&mut f, META_DATA_BLOCK | COMPRESSED_BIT, &fill(1, 0, 10, &[1, 2]));
    std::fs::write(&p, &f).unwrap();
    let mut r = GfxrReader::open(&p).unwrap();
    assert!(matches!(r.next_block(), Err(GfxrError::Corrupt { .. })));
    // An uncompressed fill whose size disagrees with its data.
    let mut f = header(0);
    block(&mut f, META_DATA_BLOCK, &fill(1, 0, 10, &[1, 2]));
    std::fs::write(&p, &f).unwrap();
    let mut r = GfxrReader::open(&p).unwrap();
    assert!(matches!(r.next_block(), Err(GfxrError::Corrupt { .. })));
    let _ = std::fs::remove_file(&p);
}

/// gfxreconstruct's `ParameterEncoder`, as far as these calls use it (LunarG/gfxreconstruct at
/// 765c3d6, `framework/encode/parameter_encoder.h`): values at their encode type's width
/// (format.h:53-67), pointers as attributes (format.h:214-231), address, data.
#[derive(Default)]
struct Enc(Vec<u8>);

/// `kIsStruct | kIsSingle` with `kHasAddress | kHasData`, or with `kIsNull`
/// (`EncodeStructPtrPreamble`, parameter_encoder.h:229-239, and `GetPointerAttributeMask`, :371-393).
const STRUCT_PTR: u32 = 0x20 | 0x2 | params::HAS_ADDRESS | params::HAS_DATA;
const NULL_STRUCT_PTR: u32 = 0x20 | 0x2 | params::IS_NULL;
const MEMORY_MAP_INFO: u32 = 1_000_271_000;
const MEMORY_UNMAP_INFO: u32 = 1_000_271_001;

impl Enc {
    fn u32(mut self, v: u32) -> Enc {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Enc {
        self.0.extend(v.to_le_bytes());
        self
    }
    /// `EncodeStructPtr` of a struct at `address` (struct_pointer_encoder.h:70-77): the preamble;
    /// the members follow.
    fn struct_ptr(self, address: u64) -> Enc {
        self.u32(STRUCT_PTR).u64(address)
    }
    /// `EncodeVoidPtrPtr(ppData, omit_output_data)` (`EncodePointerConverted`,
    /// parameter_encoder.h:438-457): a failed call leaves out the mapped address.
    fn pp_data(self, address: u64, data: Option<u64>) -> Enc {
        match data {
            Some(d) => self.u32(0x2 | params::HAS_ADDRESS | params::HAS_DATA).u64(address).u64(d),
            None => self.u32(0x2 | params::HAS_ADDRESS).u64(address),
        }
    }
}

/// `vkAllocateMemory` (generated_vulkan_api_call_encoders.cpp, the encoder after its
/// `BeginApiCallCapture`): device, `pAllocateInfo` (sType, null pNext, size, type), null
/// `pAllocator`, `pMemory` (`EncodeVulkanHandlePtr`: attributes, address, id), result.
fn allocate(memory: u64, size: u64) -> Vec<u8> {
    let e = Enc::default().u64(1).struct_ptr(0x7000).u32(5).u32(NULL_STRUCT_PTR).u64(size).u32(0);
    e.u32(NULL_STRUCT_PTR).pp_data(0x7100, Some(memory)).u32(0).0
}

/// `vkMapMemory2KHR` / `vkMapMemory2` (generated_vulkan_api_call_encoders.cpp:14420-14428 and
/// :8462-8470): `EncodeVulkanHandleValue(device)`, `EncodeStructPtr(pMemoryMapInfo)`,
/// `EncodeVoidPtrPtr(ppData)`, `EncodeEnumValue(result)`; `VkMemoryMapInfo` as
/// generated_vulkan_struct_encoders.cpp:3818-3826 writes it (sType, `EncodePNextStruct(pNext)`,
/// flags, memory id, offset, size). A null pNext is a null struct pointer
/// (generated_vulkan_pnext_struct_encoder.cpp:3487); a `VkMemoryMapPlacedInfoEXT` its struct
/// (:1193-1194; generated_vulkan_struct_encoders.cpp:8546-8551: sType, pNext, pPlacedAddress).
fn map2(memory: u64, offset: u64, placed: Option<u64>, result: i32) -> Vec<u8> {
    let mut e = Enc::default().u64(1).struct_ptr(0x7200).u32(MEMORY_MAP_INFO);
    e = match placed {
        Some(at) => e.struct_ptr(0x7300).u32(params::MEMORY_MAP_PLACED_INFO_EXT).u32(NULL_STRUCT_PTR).u64(at),
        None => e.u32(NULL_STRUCT_PTR),
    };
    e = e.u32(0).u64(memory).u64(offset).u64(0x1000);
    let mapped = (result == 0).then_some(0x7fff_0000_0000 + offset);
    e.pp_data(0x7400, mapped).u32(result as u32).0
}

/// `vkUnmapMemory2KHR` / `vkUnmapMemory2` (generated_vulkan_api_call_encoders.cpp:14461-14466,
/// :8503-8508): device, `EncodeStructPtr(pMemoryUnmapInfo)`, result; `VkMemoryUnmapInfo`
/// (generated_vulkan_struct_encoders.cpp:3828-3834): sType, pNext, flags, memory id.
fn unmap2(memory: u64) -> Vec<u8> {
    Enc::default().u64(1).struct_ptr(0x7500).u32(MEMORY_UNMAP_INFO).u32(NULL_STRUCT_PTR).u32(0).u64(memory).u32(0).0
}

/// `vkMapMemory` (generated_vulkan_api_call_encoders.cpp:759-768): device, memory, offset, size,
/// flags, ppData, result.
fn map1(memory: u64, offset: u64, result: i32) -> Vec<u8> {
    let e = Enc::default().u64(1).u64(memory).u64(offset).u64(0x1000).u32(0);
    e.pp_data(0x7600, (result == 0).then_some(0x7fff_0000_0000)).u32(result as u32).0
}

/// A function call block (`FunctionCallHeader`: api_call_id, thread_id, then the parameters).
fn call_block(f: &mut Vec<u8>, id: u32, params: &[u8]) {
    let mut body = id.to_le_bytes().to_vec();
    body.extend(3u64.to_le_bytes());
    body.extend(params);
    block(f, FUNCTION_CALL_BLOCK, &body);
}

fn events_of(bytes: &[u8]) -> Result<Vec<crate::trace::Event>, GfxrError> {
    memory_events_of(GfxrReader::new(std::io::Cursor::new(bytes))?)
}

/// The capture's events fail at the block at `at` with a message starting `msg`.
fn corrupt_at(capture: &[u8], at: u64, msg: &str) {
    match events_of(capture) {
        Err(GfxrError::Corrupt { offset, msg: m }) => assert!(offset == at && m.starts_with(msg), "{offset}: {m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn allocate_memory_parameters() {
    let p = allocate(42, 0x3000);
    assert_eq!(params::allocation_size(&p), Some(0x3000));
    assert_eq!(params::allocated(&p), Ok((42, 0)));
    assert!(params::allocated(&p[..8]).is_err());
    // A pNext chain: size unknown.
    let mut q = p.clone();
    q[24..28].copy_from_slice(&STRUCT_PTR.to_le_bytes());
    assert_eq!(params::allocation_size(&q), None);
}

#[test]
fn map_memory2_parameters() {
    let m = params::Mapped { memory: 42, offset: 0x3000, result: 0 };
    assert_eq!(params::map_memory2(&map2(42, 0x3000, None, 0)), Ok(m));
    assert_eq!(params::map_memory2(&map2(42, 0x3000, Some(0x5000_0000), 0)), Ok(m));
    let failed = params::map_memory2(&map2(42, 0x3000, None, -5)).unwrap();
    assert_eq!((failed.memory, failed.result), (42, -5));
    assert_eq!(params::map_memory(&map1(9, 64, 0)), Ok(params::Mapped { memory: 9, offset: 64, result: 0 }));
    assert_eq!(params::unmap_memory2(&unmap2(42)), Ok(42));
    // Every cut is an error that says what was missing.
    let full = map2(42, 0x3000, Some(0x5000_0000), 0);
    for n in 0..full.len() {
        let e = params::map_memory2(&full[..n]).unwrap_err();
        assert!(e.contains("end before"), "{n}: {e}");
    }
    let full = unmap2(42);
    for n in 0..full.len() {
        assert!(params::unmap_memory2(&full[..n]).is_err(), "{n}");
    }
    // A chained struct gfxreconstruct would not put there.
    let mut odd = map2(42, 0, Some(0), 0);
    // device 8, attributes 4, address 8, sType 4; the chained struct: attributes 4, address 8, sType.
    odd[36..40].copy_from_slice(&1_000_059_000u32.to_le_bytes());
    let e = params::map_memory2(&odd).unwrap_err();
    assert!(e.contains("type 1000059000"), "{e}");
}

/// A map at an offset, fill-memory commands relative to the mapped pointer (format.h:347), a
/// submit, the unmap; the core names and the KHR aliases alike.
#[test]
fn map2_fill_unmap2() {
    use crate::trace::Event;
    for (map_id, unmap_id) in
        [(call::MAP_MEMORY2_KHR, call::UNMAP_MEMORY2_KHR), (call::MAP_MEMORY2, call::UNMAP_MEMORY2)]
    {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut f = header(1);
        call_block(&mut f, call::ALLOCATE_MEMORY, &allocate(42, 0x10000));
        // A failed map places nothing: the fill below uses the successful one.
        call_block(&mut f, map_id, &map2(42, 0x8000, None, -5));
        call_block(&mut f, map_id, &map2(42, 0x3000, Some(0x6000_0000), 0));
        block(&mut f, META_DATA_BLOCK | COMPRESSED_BIT, &fill(42, 0x10, 300, &lz4_flex::block::compress(&data)));
        call_block(&mut f, call::QUEUE_SUBMIT2_KHR, &[0; 8]);
        block(&mut f, META_DATA_BLOCK, &fill(42, 0x200, 4, &[1, 2, 3, 4]));
        call_block(&mut f, unmap_id, &unmap2(42));
        let ev = events_of(&f).unwrap();
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert!(matches!(&ev[0], Event::Allocation(a) if a.id == 42 && a.size == 0x10000));
        assert!(matches!(&ev[1], Event::Dirty(d) if d.submit == 1 && d.runs == [(0x3010, 300)] && d.data == data));
        assert!(matches!(&ev[2], Event::Submit(s) if s.seq == 1));
        assert!(matches!(&ev[3], Event::Dirty(d) if d.submit == 2 && d.runs == [(0x3200, 4)]));
        // After the unmap a fill has no mapping to land in: an error naming the block.
        let at = f.len() as u64;
        block(&mut f, META_DATA_BLOCK, &fill(42, 0, 1, &[9]));
        corrupt_at(&f, at, "fill-memory command: memory 42 is not allocated and mapped");
    }
}

/// vkMapMemory's result counts as vkMapMemory2's does; a map call too short for its parameters
/// is an error naming the call and its block.
#[test]
fn damaged_map_calls_are_errors() {
    let mut f = header(0);
    call_block(&mut f, call::ALLOCATE_MEMORY, &allocate(7, 0x4000));
    call_block(&mut f, call::MAP_MEMORY, &map1(7, 0x100, -2));
    let at = f.len() as u64;
    block(&mut f, META_DATA_BLOCK, &fill(7, 0, 1, &[1]));
    corrupt_at(&f, at, "fill-memory command: memory 7 is not allocated");

    let mut f = header(0);
    call_block(&mut f, call::ALLOCATE_MEMORY, &allocate(7, 0x4000));
    let at = f.len() as u64;
    let cut = map2(7, 0x100, None, 0);
    call_block(&mut f, call::MAP_MEMORY2_KHR, &cut[..cut.len() - 6]);
    corrupt_at(&f, at, "vkMapMemory2KHR: ");
}

/// Every truncation and every flipped byte of a capture with these blocks gives events or an
/// error, never a panic (the `gfxr` fuzz target does the same at random).
#[test]
fn damage_never_panics() {
    let mut f = header(1);
    call_block(&mut f, call::ALLOCATE_MEMORY, &allocate(42, 0x10000));
    call_block(&mut f, call::MAP_MEMORY2_KHR, &map2(42, 0x3000, Some(0x6000_0000), 0));
    block(&mut f, META_DATA_BLOCK | COMPRESSED_BIT, &fill(42, 0x10, 64, &lz4_flex::block::compress(&[5; 64])));
    call_block(&mut f, call::QUEUE_SUBMIT, &[0; 8]);
    call_block(&mut f, call::UNMAP_MEMORY2_KHR, &unmap2(42));
    assert!(events_of(&f).is_ok());
    for n in 0..f.len() {
        let _ = events_of(&f[..n]);
    }
    for i in 0..f.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut g = f.clone();
            g[i] ^= x;
            let _ = events_of(&g);
        }
    }
}
