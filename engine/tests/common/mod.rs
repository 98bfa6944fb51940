//! Helpers shared by the engine's integration tests; each test uses some of them.
#![allow(dead_code)]

pub mod int8_check;
pub mod models;
