//! Fused scaled dot-product attention and its backward.
