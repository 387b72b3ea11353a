//! Neural-network layers, losses, initialisation and PyTorch-compatible state dicts.
//!
//! strata-nn owns [`Module`] (named parameters and buffers, train/eval mode, state dicts
//! and safetensors files), the layers, the [`loss`]es and [`init`]. It computes with
//! [`Var`](strata_autograd::Var)s from strata-autograd and leaves optimizers to
//! strata-optim.
//!
//! Layers take PyTorch's arguments, defaults, initialisation and parameter names, so a
//! state dict saved here loads into the same PyTorch module and back:
//!
//! ```
//! use strata_nn::{Conv2d, Flatten, Forward, Linear, MaxPool2d, Module, ReLU, Sequential};
//! use strata_nn::loss::{ClassLossOptions, cross_entropy};
//! use strata_autograd::Var;
//! use strata_tensor::{IndexTensor, Tensor, seeded_rng};
//!
//! let mut rng = seeded_rng(0);
//! let model = Sequential::<f32>::new()
//!     .push(Conv2d::new(3, 8, 3, &mut rng)?)
//!     .push(ReLU)
//!     .push(MaxPool2d::new(2))
//!     .push(Flatten::default())
//!     .push(Linear::new(8 * 3 * 3, 10, true, &mut rng));
//! let x = Var::new(Tensor::randn(&[4, 3, 8, 8], &mut rng));
//! let target = IndexTensor::from_vec(vec![1, 0, 9, 3], &[4])?;
//! let loss = cross_entropy(&model.forward(&x)?, &target, &ClassLossOptions::default())?;
//! loss.backward()?;
//! assert!(model.parameters().iter().all(|p| p.grad().is_some()));
//! assert_eq!(model.state_dict().keys().next(), Some("0.weight"));
//! # Ok::<(), strata_nn::NnError>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod functional;
mod hooks;
pub mod init;
mod layers;
pub mod loss;
mod module;
mod state_dict;
mod torch_load;

pub use error::{NnError, Result, StateDictMismatch};
pub use functional::{AttnMask, InterpolateMode, Resize, SdpaOptions, Upsample};
pub use hooks::Hooked;
pub use layers::activation::{
    GELU, Identity, LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Tanh,
};
pub use layers::attention::{KvCache, MhaConfig, MhaForward, MultiheadAttention};
pub use layers::bilinear::Bilinear;
pub use layers::conv::{Conv1d, Conv2d};
pub use layers::conv_transpose::{ConvTranspose1d, ConvTranspose2d};
pub use layers::decoder::{
    DecoderCache, DecoderLayerCache, DecoderMasks, Transformer, TransformerDecoder,
    TransformerDecoderLayer, generate_square_subsequent_mask,
};
pub use layers::dropout::Dropout;
pub use layers::embedding::Embedding;
pub use layers::embedding_bag::{BagMode, EmbeddingBag};
pub use layers::group_norm::{GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNormConfig};
pub use layers::linear::Linear;
pub use layers::norm::{BatchNorm1d, BatchNorm2d, BatchNormConfig, LayerNorm, RMSNorm};
pub use layers::pool::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, Flatten, MaxPool1d, MaxPool2d,
    Pool1dParams,
};
pub use layers::reshape::{PixelShuffle, PixelUnshuffle, Unflatten};
pub use layers::rnn::{GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell};
pub use layers::rnn::{RnnConfig, RnnNonlinearity, RnnParams};
pub use layers::transformer::{
    LearnedPositionalEncoding, SinusoidalPositionalEncoding, TransformerActivation,
    TransformerEncoder, TransformerEncoderLayer, TransformerEncoderLayerConfig,
};
pub use layers::volume::{AvgPool3d, Conv3d, Conv3dParams, MaxPool3d, Pool3dParams};
pub use module::{Forward, Module, Sequential, StateKind, checkpoint_sequential, visit_child};
pub use state_dict::StateDict;
pub use strata_autograd::HookHandle;
pub use strata_tensor::{Conv1dParams, Conv2dParams, Padding};
pub use torch_load::{load_pytorch, load_pytorch_bytes};
