pub mod minimize;
