"""WeChat's official push test vectors (消息加解密 documentation) and the apps they belong to, shared
by the protocol tests and the push endpoint's tests."""

from __future__ import annotations

from channels.wechat.config import WeChatApp

KEY_A = "A" * 43  # AES key of 32 zero bytes
V1_APP = WeChatApp("mini", "miniprogram", "wxba5fad812f8e6fb9", "s", "AAAAA", KEY_A, "secure", "json")
V1_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6Js"
    "XUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8Eaj"
    "AsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
V1_SECURE_QUERY = {
    "signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d", "timestamp": "1714112445", "nonce": "415670741",
    "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "encrypt_type": "aes",
    "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
}
V1_PLAINTEXT = {
    "ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "CreateTime": "1714112445",
    "MsgType": "event", "Event": "debug_demo", "debug_str": "hello world",
}
V2_APP = WeChatApp("oa", "official", "wx134c8103faa5a59e", "s", "AAAAA", KEY_A, "secure", "xml")
V2_BODY = (
    b"<xml>\n    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n    <Encrypt><![CDATA["
    b"D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+aj"
    b"KYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJ"
    b"B5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7"
    b"KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZIN"
    b"mdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==]]></Encrypt>\n</xml>"
)
V2_QUERY = {"signature": "cc0c594499c1634947d5b502f158ee518947db27", "timestamp": "1715943329",
            "nonce": "1590219412", "encrypt_type": "aes", "msg_signature": "6c12a4205838198b8fa631b3220723bb07f1015c"}
V3_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
V3_APP = WeChatApp("sample", "official", "wx2c2769f8efd9abc2", "s", "spamtest", V3_KEY, "compatible", "xml")
V3A_BODY = (
    b"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]>"
    b"</FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]>"
    b"</Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655H"
    b"uD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyW"
    b"NlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tC"
    b"Op3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEP"
    b"o5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>"
)
V3B_ENCRYPT = (
    "mfBCs65c67CeJw22u4VT2TD73q5H06+ocrAIxswCaeZ/d/Lw0msSZFHY0teqgSYiI1zR2gD2DKrB3TIrmX/liNSDrGqS8jSI/WPeKB5VPr7Ezr7"
    "gomZAyGCwJSgT1TRFWPfONGJMxuj2nk4faTuspAuVIFQ6SHwZuJBZC7mcJp7Cgr9cUhATQWDbOPaE7ukZBTV2YqyzH+UI2AK+J1S47cE79k1RX8t"
    "0hcTz/O0hlK8DGXKnvYv88qKQcI7z4iaajqHfRVZKBNyOODabs+It+ZfM3dWTeFcPgDbGtIEnpt/EDtuuA/zMvtkaKdHdswPnVZQ+xdwbYr3ldGv"
    "fT8HlEYEgkgKaThxTFobVlwzu2ZkXCjicbP3xdr15Iq48ObgzPpqYuZ3IEoyggZDKClquk0u0orMck4GTF/XyE8yGzc4="
)
