//! Transformer encoders and positional encodings.
