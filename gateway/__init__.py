"""The intake gateway: every channel's messages in, the bot and the handoff in between, replies out."""
