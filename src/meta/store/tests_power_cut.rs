//! meta::store::tests_power_cut: randomized power cuts (written next).
