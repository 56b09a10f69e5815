"""SMS: providers (Alibaba Cloud, Tencent Cloud, log), their callbacks, and SMS as an intake channel."""

from channels.sms.channel import NAME, NoPolicy, SmsChannel, SmsPolicy, SmsSender

__all__ = ["NAME", "NoPolicy", "SmsChannel", "SmsPolicy", "SmsSender"]
