use super::backend_class;

#[test]
fn backend_classes_drop_the_device_index() {
    assert_eq!(backend_class("flex"), "flex");
    assert_eq!(backend_class("cuda:1"), "cuda");
    assert_eq!(backend_class("tch"), "tch");
    assert_eq!(backend_class("tch-cuda:0"), backend_class("TCH-CUDA:1"));
    assert_eq!(backend_class("tch-cuda:0"), "tch-cuda");
}
