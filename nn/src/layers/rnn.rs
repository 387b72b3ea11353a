//! Recurrent layers: RNN, LSTM, GRU and their cells, with PyTorch's parameter names.
