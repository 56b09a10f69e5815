"""SMS: providers (Alibaba Cloud, Tencent Cloud, log), their callbacks, and SMS as an intake channel."""

from channels.sms.channel import NAME, RUNTIME, SmsRuntime, SmsSender, add_routes, setup_runtime

__all__ = ["NAME", "RUNTIME", "SmsRuntime", "SmsSender", "add_routes", "setup_runtime"]
