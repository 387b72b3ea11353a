//! Attention: scaled dot-product attention and `MultiheadAttention`.
