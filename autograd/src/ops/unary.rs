//! The unary elementwise ops and activations on [`Var`], expanded from strata-tensor's
//! table [`for_each_unary_op!`](strata_tensor::for_each_unary_op), where each op is
//! declared once: its forward is the `Tensor` method of the same name, its backward the
//! fused kernel `strata_tensor::elementwise::<op>::backward` on the value the table says
//! it reads (the input or the output).

use strata_tensor::elementwise;
use strata_tensor::{Element, Tensor};

use crate::Var;
use crate::ops::tracked;

macro_rules! define_var_unary_ops {
    ($(
        $(#[$doc:meta])*
        $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, |$x:ident| $fwd:expr,
        $kind:ident $( ( $($formula:tt)* ) )? ;
    )*) => {
        impl<T: Element> Var<T> {
            $(
                define_var_unary_ops!(@method $(#[$doc])* $name ( $($p : $pt),* ), $kind);
            )*
        }
    };
    (@method $(#[$doc:meta])* $name:ident ( $($p:ident : $pt:ty),* ), input) => {
        $(#[$doc])*
        pub fn $name(&self $(, $p: $pt)*) -> Var<T> {
            let x = self.value();
            let y = x.$name($($p),*);
            self.unary_op(stringify!($name), y, move |g| {
                Ok(elementwise::$name::backward(&x, g $(, $p)*)?)
            })
            .double_backward(move |g, inputs, _| {
                let x = tracked(inputs, 0);
                Ok(vec![Some(elementwise::$name::derivative::<Var<T>, T>(&x, g $(, $p)*))])
            })
        }
    };
    (@method $(#[$doc:meta])* $name:ident ( $($p:ident : $pt:ty),* ), output) => {
        $(#[$doc])*
        pub fn $name(&self $(, $p: $pt)*) -> Var<T> {
            let y = self.value().$name($($p),*);
            let saved = Var::tracking(&[self]).then(|| y.clone());
            self.unary_op(stringify!($name), y, move |g| {
                let y = saved.as_ref().expect("saved when tracking");
                Ok(elementwise::$name::backward(y, g $(, $p)*)?)
            })
            .double_backward(move |g, inputs, _| {
                // The output again, as a function of the input, so that it is
                // differentiated too.
                let y = tracked(inputs, 0).$name($($p),*);
                Ok(vec![Some(elementwise::$name::derivative::<Var<T>, T>(&y, g $(, $p)*))])
            })
        }
    };
    (@method $(#[$doc:meta])* $name:ident ( $($p:ident : $pt:ty),* ), grad_only) => {
        $(#[$doc])*
        pub fn $name(&self $(, $p: $pt)*) -> Var<T> {
            let y = self.value().$name($($p),*);
            self.unary_op(stringify!($name), y, |g| Ok(elementwise::$name::backward(g)))
                .double_backward(|g, _, _| Ok(vec![Some(elementwise::$name::derivative(g))]))
        }
    };
    (@method $(#[$doc:meta])* $name:ident ( $($p:ident : $pt:ty),* ), zero) => {
        $(#[$doc])*
        pub fn $name(&self $(, $p: $pt)*) -> Var<T> {
            let y = self.value().$name($($p),*);
            self.unary_op(stringify!($name), y, |g| Ok(Tensor::zeros(g.shape())))
                .double_backward(|g, _, _| Ok(vec![Some(Var::new(Tensor::zeros(g.shape())))]))
        }
    };
    (@method $(#[$doc:meta])* $name:ident ( $($p:ident : $pt:ty),* ), nograd) => {};
}

strata_tensor::for_each_unary_op!(define_var_unary_ops);
