use super::backend_class;

#[test]
fn backend_classes_drop_the_device_index_and_mark_fused_libtorch() {
    assert_eq!(backend_class("flex"), "flex");
    assert_eq!(backend_class("cuda:1"), "cuda");
    assert_eq!(backend_class("tch"), "tch+fused3");
    assert_eq!(backend_class("tch-cuda:0"), backend_class("TCH-CUDA:1"));
    assert_eq!(backend_class("tch-cuda:0"), "tch-cuda+fused3");
}
