//! Sans-IO OpenVPN 2.6 protocol core: codecs, reliability, control-channel wrapping,
//! key-method 2, key derivation and the data channel, with no sockets, clocks or threads.
//! The layers land with the protocol issue.
