"""WeChat's push protocol against the official test vectors (WeChat's 消息加解密 documentation)
and wechatpy's own: signatures, secure mode in JSON and XML, compatible mode, the encrypted reply."""

from __future__ import annotations

import base64
import json

import pytest
from wechatpy.crypto import PrpCrypto

from channels.wechat.config import WeChatApp, WeChatConfigError, load_apps
from channels.wechat.protocol import (
    BadPush,
    Forbidden,
    check_url_signature,
    encrypt_reply,
    open_push,
    parse_xml,
    sign,
    to_inbound,
)
from tests.wechat_vectors import (
    KEY_A,
    V1_APP,
    V1_ENCRYPT,
    V1_PLAINTEXT,
    V1_SECURE_QUERY,
    V2_APP,
    V2_BODY,
    V2_QUERY,
    V3_APP,
    V3_KEY,
    V3A_BODY,
    V3B_ENCRYPT,
)


def fixed_random(value: str) -> type[PrpCrypto]:
    class Fixed(PrpCrypto):
        def get_random_string(self) -> str:
            return value

    return Fixed


def test_v1_url_verification_signature() -> None:
    query = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "timestamp": "1714036504",
             "nonce": "1514711492", "echostr": "4375120948345356249"}
    check_url_signature("AAAAA", query)
    with pytest.raises(Forbidden):
        check_url_signature("AAAAB", query)
    with pytest.raises(Forbidden):
        check_url_signature("AAAAA", query | {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441697"})
    with pytest.raises(Forbidden):
        check_url_signature("AAAAA", {k: v for k, v in query.items() if k != "signature"})


def test_v1_plaintext_post_signature_and_fields() -> None:
    assert sign("AAAAA", "1714037059", "486452656") == "899cf89e464efb63f54ddac96b0a0a235f53aa78"
    app = WeChatApp("mini", "miniprogram", "wxba5fad812f8e6fb9", "s", "AAAAA", "", "plaintext", "json")
    body = json.dumps({"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
                       "CreateTime": 1714037059, "MsgType": "event", "Event": "debug_demo",
                       "debug_str": "hello world"}).encode()
    fields = open_push(app, {"signature": "899cf89e464efb63f54ddac96b0a0a235f53aa78", "timestamp": "1714037059",
                             "nonce": "486452656"}, body)
    assert fields["CreateTime"] == "1714037059" and fields["Event"] == "debug_demo"


def test_v1_secure_json_decrypts_to_the_official_plaintext() -> None:
    check_url_signature("AAAAA", V1_SECURE_QUERY)
    body = json.dumps({"ToUserName": "gh_97417a04a28d", "Encrypt": V1_ENCRYPT}).encode()
    assert open_push(V1_APP, V1_SECURE_QUERY, body) == V1_PLAINTEXT
    msg = to_inbound(V1_APP, V1_PLAINTEXT)
    # An unknown event is kept (no text, no reply); events dedupe by sender + CreateTime.
    assert (msg.channel, msg.sender_id, msg.text, msg.message_id) == (
        "wechat:mini", "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "", "debug_demo@1714112445")
    # The URL `signature` does not cover the body: a forged msg_signature must fail on its own.
    with pytest.raises(Forbidden, match="msg_signature"):
        open_push(V1_APP, V1_SECURE_QUERY | {"msg_signature": "0" * 40}, body)
    with pytest.raises(Forbidden, match="msg_signature"):
        open_push(V1_APP, {k: v for k, v in V1_SECURE_QUERY.items() if k != "msg_signature"}, body)


def test_v2_secure_xml_decrypts_with_newlines_kept() -> None:
    check_url_signature("AAAAA", V2_QUERY)
    fields = open_push(V2_APP, V2_QUERY, V2_BODY)
    assert fields == {"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
                      "CreateTime": "1715943329", "MsgType": "event", "Event": "debug_demo",
                      "debug_str": "hello world"}


def test_v3_compatible_mode_trusts_only_the_ciphertext() -> None:
    query = {"timestamp": "1409735669", "nonce": "1320562132", "encrypt_type": "aes",
             "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa"}
    fields = open_push(V3_APP, query, V3A_BODY.replace(b"abcdteT]]></Content>", b"FORGED]]></Content>", 1))
    msg = to_inbound(V3_APP, fields)
    assert (msg.text, msg.message_id, msg.sender_id) == ("abcdteT", "6054768590064713728",
                                                          "oyORnuP8q7ou2gfYjqLzSIWZf0rs")


def test_v3b_cpp_sample() -> None:
    query = {"timestamp": "1410349438", "nonce": "298025754", "encrypt_type": "aes",
             "msg_signature": "003fee52ecc56afb46c00b5c7721be87860ce785"}
    body = f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{V3B_ENCRYPT}]]></Encrypt></xml>"
    msg = to_inbound(V3_APP, open_push(V3_APP, query, body.encode()))
    assert (msg.text, msg.message_id) == ("abcdteT", "6057404712141979648")


def test_v3c_java_sample_encryption() -> None:
    prp = fixed_random("aaaabbbbccccdddd")(base64.b64decode(V3_KEY + "="))
    assert prp.encrypt("我是中文abcd123", "wxb11529c136998cb6").decode() == (
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==")


def test_v4_wechatpy_signature_vector() -> None:
    check_url_signature("test", {"signature": "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff",
                                 "timestamp": "1410685589", "nonce": "test"})
    with pytest.raises(Forbidden):
        check_url_signature("test", {"signature": "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe",
                                     "timestamp": "1410685589", "nonce": "test"})


def test_v4_wechatpy_crypto_vector_decrypts() -> None:
    app = WeChatApp("wk", "official", "wx49f0ab532d5d035a", "s", "123456",
                    "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "secure", "xml")
    encrypt = (
        "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymz"
        "xh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIi"
        "OAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvc"
        "cTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
    )
    query = {"timestamp": "1411525903", "nonce": "461056294", "encrypt_type": "aes",
             "msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"}
    fields = open_push(app, query, f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode())
    assert (fields["Content"], fields["FromUserName"], fields["MsgId"]) == ("test", "messense", "4363689963896700987")


def test_encrypted_reply_v1_json_and_v2_xml() -> None:
    reply = json.loads(encrypt_reply(V1_APP, '{"demo_resp":"good luck"}', "415670741", "1713424427",
                                     fixed_random("707722b803182950")))
    assert reply == {"Encrypt": "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==",
                     "MsgSignature": "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1", "TimeStamp": 1713424427,
                     "Nonce": "415670741"}
    xml = encrypt_reply(V2_APP, "<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>", "415670741", "1713424427",
                        fixed_random("999951349e8ee746"))
    assert parse_xml(xml.encode()) == {
        "Encrypt": "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3HAZbSvPT9t/"
                   "o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7",
        "MsgSignature": "03e0812039325c2712ef5f0f980fd14c70d6e307", "TimeStamp": "1713424427", "Nonce": "415670741"}


def test_wrong_key_and_tampered_ciphertext_are_400_not_403() -> None:
    body = json.dumps({"ToUserName": "gh_97417a04a28d", "Encrypt": V1_ENCRYPT}).encode()
    other_key = WeChatApp("mini", "miniprogram", "wxba5fad812f8e6fb9", "s", "AAAAA", "B" * 43, "secure", "json")
    with pytest.raises(BadPush, match="decrypt"):
        open_push(other_key, V1_SECURE_QUERY, body)
    other_appid = WeChatApp("mini", "miniprogram", "wx0000000000000000", "s", "AAAAA", KEY_A, "secure", "json")
    with pytest.raises(BadPush, match="decrypt"):
        open_push(other_appid, V1_SECURE_QUERY, body)
    # Someone who knows the Token but not the key: the signature is right, the ciphertext is not.
    tampered = "B" + V1_ENCRYPT[1:]
    query = V1_SECURE_QUERY | {"msg_signature": sign("AAAAA", "1714112445", "415670741", tampered)}
    with pytest.raises(BadPush, match="decrypt"):
        open_push(V1_APP, query, json.dumps({"Encrypt": tampered}).encode())


@pytest.mark.parametrize(
    ("kind", "extra", "text", "attachment"),
    [
        ("image", {"PicUrl": "http://mmbiz.qpic.cn/x", "MediaId": "m1"}, "",
         {"type": "image", "pic_url": "http://mmbiz.qpic.cn/x", "media_id": "m1"}),
        ("voice", {"MediaId": "m2", "Format": "amr"}, "", {"type": "voice", "media_id": "m2", "format": "amr"}),
        ("voice", {"MediaId": "m3", "Format": "amr", "Recognition": "天坛路停水了"}, "天坛路停水了",
         {"type": "voice", "media_id": "m3", "format": "amr", "recognition": "天坛路停水了"}),
        ("location", {"Location_X": "35.09", "Location_Y": "112.6", "Scale": "15", "Label": "济源市沁园路12号"},
         "济源市沁园路12号", {"type": "location", "x": "35.09", "y": "112.6", "scale": "15", "label": "济源市沁园路12号"}),
        ("miniprogrampage", {"Title": "t", "AppId": "wx1", "PagePath": "p", "ThumbMediaId": "tm"}, "",
         {"type": "miniprogrampage", "title": "t", "app_id": "wx1", "page_path": "p", "thumb_media_id": "tm"}),
        ("hologram", {}, "", {"type": "hologram"}),
    ],
)
def test_message_kinds(kind: str, extra: dict[str, str], text: str, attachment: dict[str, str]) -> None:
    fields = {"FromUserName": "oUser1", "CreateTime": "1700000000", "MsgType": kind, "MsgId": "42", **extra}
    msg = to_inbound(V1_APP, fields)
    assert (msg.text, msg.attachments, msg.message_id) == (text, (attachment,), "42")


def test_enter_tempsession_is_a_greeting_deduped_by_sender_and_time() -> None:
    fields = {"FromUserName": "oUser1", "CreateTime": "1700000000", "MsgType": "event",
              "Event": "user_enter_tempsession", "SessionFrom": "home"}
    msg = to_inbound(V1_APP, fields)
    assert (msg.text, msg.message_id, msg.attachments) == ("你好", "user_enter_tempsession@1700000000", ())


@pytest.mark.parametrize(
    "fields",
    [
        {"CreateTime": "1", "MsgType": "text", "Content": "x"},
        {"FromUserName": "o<script>", "CreateTime": "1", "MsgType": "text", "Content": "x"},
        {"FromUserName": "oU", "CreateTime": "soon", "MsgType": "text", "Content": "x"},
        {"FromUserName": "oU", "CreateTime": "1", "Content": "x"},
        {"FromUserName": "oU", "CreateTime": "1", "MsgType": "text", "Content": "x", "MsgId": "9" * 100},
        {"FromUserName": "oU", "CreateTime": "-1", "MsgType": "text", "Content": "x"},
    ],
)
def test_malformed_fields(fields: dict[str, str]) -> None:
    with pytest.raises(BadPush):
        to_inbound(V1_APP, fields)


@pytest.mark.parametrize(
    "raw",
    [
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>',
        b'<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><Content>&c;</Content></xml>',
        b"<xml><Content>x</Content>",
        b"<notxml/>",
        b"\xff\xfe<xml/>",
    ],
)
def test_hostile_or_broken_xml_is_refused(raw: bytes) -> None:
    with pytest.raises(BadPush):
        parse_xml(raw)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"name": "Mini App"}, "name"),
        ({"kind": "game"}, "kind"),
        ({"appid": "wx123"}, "appid"),
        ({"token": "a"}, "token"),
        ({"encoding_aes_key": "short"}, "encoding_aes_key"),
        ({"mode": "open"}, "mode"),
        ({"format": "yaml"}, "format"),
        ({"colour": "red"}, "unknown keys colour"),
    ],
)
def test_config_errors_name_the_key(entry: dict[str, str], problem: str) -> None:
    good = {"name": "mini", "kind": "miniprogram", "appid": "wxba5fad812f8e6fb9", "secret": "s", "token": "AAAAA",
            "encoding_aes_key": KEY_A, "mode": "secure", "format": "json"}
    assert load_apps(json.dumps([good]))["mini"].channel == "wechat:mini"
    with pytest.raises(WeChatConfigError, match=problem):
        load_apps(json.dumps([good | entry]))


def test_config_from_yaml_file_and_secrets_not_in_repr(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "wechat.yml"
    path.write_text("apps:\n  - {name: oa, kind: official, appid: wx134c8103faa5a59e, secret: topsecret,\n"
                    "     token: AAAAA, mode: plaintext, format: xml}\n", encoding="utf-8")
    apps = load_apps(str(path))
    assert apps["oa"].mode == "plaintext" and "topsecret" not in repr(apps["oa"])
