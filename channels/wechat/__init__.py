"""The WeChat channel: mini-programs (客服消息) and official accounts, several apps at once."""

from channels.wechat.push import WeChatChannel

__all__ = ["WeChatChannel"]
