"""The WeChat channel: mini-programs (客服消息) and official accounts, several apps at once."""

from channels.wechat.push import add_routes, configure, setup_runtime, shutdown

__all__ = ["add_routes", "configure", "setup_runtime", "shutdown"]
