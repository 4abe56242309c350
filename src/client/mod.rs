//! The client side: a checking stream client and the Batch Server upload.
pub mod stream;
pub mod upload;
