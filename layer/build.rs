//! Places the layer manifest beside the built library, so `VK_ADD_LAYER_PATH=<target dir>` works.
use std::path::PathBuf;

fn main() {
    // References inside the layer bind to its own definitions: an application linked with
    // libvulkan has the loader's vkGetInstanceProcAddr & co. in the global scope, which would
    // otherwise interpose on the layer's exported functions of the same names.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest_dir.join("../manifest/VkLayer_vkdirty.json");
    println!("cargo:rerun-if-changed={}", src.display());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: three levels up is <target>/<profile>.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    if let Some(profile_dir) = out.ancestors().nth(3) {
        let _ = std::fs::copy(&src, profile_dir.join("VkLayer_vkdirty.json"));
    }
}
