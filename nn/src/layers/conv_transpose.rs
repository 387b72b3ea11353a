//! Transposed convolutions: `ConvTranspose1d`, `ConvTranspose2d` (the upsampling layers of
//! decoders and generators).

use strata_autograd::{ConvTransposeParams, Var};
use strata_tensor::Element;
use strata_tensor::rand::Rng;

use crate::error::config_error;
use crate::init::default_layer_init;
use crate::{Forward, Module, Result, StateKind};

/// The shared state: weight `[C_in, C_out/groups, *kernel]`, bias `[C_out]`.
fn init<T: Element, R: Rng + ?Sized>(
    layer: &'static str,
    in_channels: usize,
    out_channels: usize,
    kernel: &[usize],
    groups: usize,
    bias: bool,
    rng: &mut R,
) -> Result<(Var<T>, Option<Var<T>>)> {
    if groups == 0 || !in_channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return Err(config_error(
            layer,
            format!(
                "in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            ),
        ));
    }
    if kernel.contains(&0) {
        return Err(config_error(layer, "the kernel size must be positive"));
    }
    // PyTorch initialises as for a weight [C_out/groups·…, …]: fan-in is the second
    // dimension times the kernel, the bias bound the same.
    let shape: Vec<usize> = [&[in_channels, out_channels / groups][..], kernel].concat();
    let (weight, _) = default_layer_init::<T, R>(&shape, false, rng);
    let fan_in = (out_channels / groups) * kernel.iter().product::<usize>();
    let bias = bias.then(|| {
        let b = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        let t =
            strata_tensor::Tensor::uniform(&[out_channels], T::from_f64(-b), T::from_f64(b), rng)
                .expect("finite bounds");
        Var::parameter(t)
    });
    Ok((weight, bias))
}

macro_rules! conv_transpose_layer {
    ($(#[$doc:meta])* $name:ident, $d:literal, $method:ident) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            /// `[in_channels, out_channels / groups, *kernel]`.
            pub weight: Var<T>,
            /// `[out_channels]`, when the layer has a bias.
            pub bias: Option<Var<T>>,
            params: ConvTransposeParams<$d>,
        }

        impl<T: Element> $name<T> {
            /// A layer with PyTorch's initialisation drawn from `rng`.
            ///
            /// # Errors
            /// [`NnError::Config`](crate::NnError::Config) when the groups do not divide the
            /// channels or a kernel size is 0.
            pub fn new<R: Rng + ?Sized>(
                in_channels: usize,
                out_channels: usize,
                kernel: [usize; $d],
                params: ConvTransposeParams<$d>,
                bias: bool,
                rng: &mut R,
            ) -> Result<Self> {
                let (weight, bias) = init(
                    stringify!($name),
                    in_channels,
                    out_channels,
                    &kernel,
                    params.groups,
                    bias,
                    rng,
                )?;
                Ok($name { weight, bias, params })
            }

            /// The stride, padding, output padding, dilation and groups.
            pub fn params(&self) -> ConvTransposeParams<$d> {
                self.params
            }
        }

        impl<T: Element> Module<T> for $name<T> {
            fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
                f("weight", &self.weight, StateKind::Parameter);
                if let Some(b) = &self.bias {
                    f("bias", b, StateKind::Parameter);
                }
            }
        }

        impl<T: Element> Forward<T> for $name<T> {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                Ok(x.$method(&self.weight, self.bias.as_ref(), self.params)?)
            }
        }
    };
}

conv_transpose_layer!(
    /// A transposed 1-d convolution, like `nn.ConvTranspose1d(in, out, kernel, stride,
    /// padding, output_padding, groups, bias, dilation)`: input `[N, C_in, L]` or
    /// `[C_in, L]`.
    ConvTranspose1d, 1, conv_transpose1d
);
conv_transpose_layer!(
    /// A transposed 2-d convolution, like `nn.ConvTranspose2d(in, out, kernel, stride,
    /// padding, output_padding, groups, bias, dilation)`: input `[N, C_in, H, W]` or
    /// `[C_in, H, W]`.
    ///
    /// ```
    /// use strata_autograd::{ConvTransposeParams, Var};
    /// use strata_nn::{ConvTranspose2d, Forward};
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let params = ConvTransposeParams { stride: [2, 2], padding: [1, 1], output_padding: [1, 1], ..Default::default() };
    /// let up = ConvTranspose2d::<f32>::new(8, 4, [3, 3], params, true, &mut seeded_rng(0))?;
    /// let y = up.forward(&Var::new(Tensor::zeros(&[2, 8, 5, 5])))?;
    /// assert_eq!(y.shape(), &[2, 4, 10, 10]); // doubles the resolution
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    ConvTranspose2d, 2, conv_transpose2d
);
