//! The differentiable fused scaled dot-product attention.
