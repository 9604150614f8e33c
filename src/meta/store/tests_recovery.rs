//! meta::store::tests_recovery: torn tails and damage on open (written next).
