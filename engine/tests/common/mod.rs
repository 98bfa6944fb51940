pub mod int8_check;
