//! The differentiable recurrent sequence ops (fused RNN, LSTM and GRU layers).
