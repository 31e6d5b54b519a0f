//! `lpeft_model::device::seed`: the same draws as burn's seed, and on a machine with two GPUs
//! seeding one device leaves the other's stream alone (burn's seed, libtorch's `manual_seed`,
//! re-seeds them all). Run on a GPU with `LPEFT_TEST_DEVICE=tch-cuda` (`--features tch`).
#![cfg(feature = "tch")]

use burn::tensor::{Distribution, Tensor};
use lpeft_model::device::{device, seed};

fn draw(d: &burn::tensor::Device) -> Vec<f32> {
    Tensor::<1>::random([64], Distribution::Default, d)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn seeding_one_device_draws_what_burns_seed_draws_and_leaves_the_others_alone() {
    let name = std::env::var("LPEFT_TEST_DEVICE").unwrap_or_else(|_| "tch".into());
    let d = device(&name).unwrap();
    d.seed(5);
    let burns = draw(&d);
    seed(&d, 5).unwrap();
    let ours = draw(&d);
    assert_eq!(burns, ours, "{name}: seeded draws differ from burn's");
    seed(&d, 6).unwrap();
    assert_ne!(draw(&d), ours, "{name}: another seed drew the same values");

    if name.starts_with("tch-cuda") && tch::Cuda::device_count() >= 2 {
        let (g0, g1) = (device("tch-cuda:0").unwrap(), device("tch-cuda:1").unwrap());
        seed(&g1, 5).unwrap();
        let first = draw(&g1);
        seed(&g1, 5).unwrap();
        seed(&g0, 9).unwrap(); // another stage starting on GPU 0
        assert_eq!(draw(&g1), first, "seeding GPU 0 moved GPU 1's stream");
    }
}
