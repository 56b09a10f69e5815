"""Channel adapters: each turns one provider's traffic into InboundMessage and delivers Replies."""
