//! Fused recurrent kernels (RNN, LSTM, GRU over a whole sequence) and their backward.
