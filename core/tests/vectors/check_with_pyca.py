#!/usr/bin/env python3
"""Independent check of envelope-v1.json and envelope-v1-padded.json with pyca/cryptography
(OpenSSL), so the vectors are confirmed by a second implementation and not only by the Rust code
that wrote them. envelope-v1.json is sealed without padding (as clients before padding did),
envelope-v1-padded.json the same message padded with spaces to its size class.

Optional, not part of `cargo test`: needs `pip install cryptography`. Run from anywhere:
    python3 core/tests/vectors/check_with_pyca.py
"""
import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).resolve().parent


def load_key(name):
    return serialization.load_pem_private_key((HERE / name).read_bytes(), None)


def fingerprint(key):
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def mgf1(seed, length):
    out, counter = b"", 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def raw_rsa(value, exponent, modulus):
    return pow(int.from_bytes(value, "big"), exponent, modulus).to_bytes(512, "big")


def padded_len(length, classes):
    """The padding rule: the smallest class that holds the JSON (longer ones are refused)."""
    return next(c for c in classes if length <= c)


def expected_plaintext(v):
    inner = v["inputs"]["inner_json"].encode()
    padding = v.get("padding")
    if padding is None:
        return inner
    classes = padding["classes"]
    assert classes == [4096, 8192, 16384, 32768, 65536]
    assert bytes.fromhex(padding["padding_byte_hex"]) == b" "
    for row in padding["padded_len"]:
        assert padded_len(row["len"], classes) == row["padded_len"], row
    assert padding["inner_json_len"] == len(inner)
    assert padding["plaintext_len"] == padded_len(len(inner), classes)
    return inner + b" " * (padding["plaintext_len"] - len(inner))


def check(name):
    v = json.loads((HERE / name).read_text())
    inputs, mid, packet = v["inputs"], v["intermediates"], v["outputs"]["packet"]
    sender, recipient = load_key(inputs["sender_key_file"]), load_key(inputs["recipient_key_file"])
    addressed = [load_key(name) for name in inputs["addressed_key_files"]]

    assert hashlib.sha256(packet["message"].encode()).hexdigest() == packet["hash"]
    message, signature = base64.b64decode(packet["message"]), base64.b64decode(packet["signature"])
    assert message[0] == 1 and signature[0] == 1
    wrapped = message[1:513]
    assert wrapped.hex() == mid["wrapped_key_hex"]

    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    k = recipient.decrypt(wrapped, oaep)
    assert k.hex() == inputs["content_key_hex"]
    # Undo OAEP by hand to confirm the injected seed (RFC 8017 7.1.2 step 3).
    priv = recipient.private_numbers()
    em = raw_rsa(wrapped, priv.d, priv.public_numbers.n)
    masked_seed, masked_db = em[1:33], em[33:]
    seed = bytes(a ^ b for a, b in zip(masked_seed, mgf1(masked_db, 32)))
    assert seed.hex() == inputs["oaep_seed_hex"]

    def derive(info):
        return HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=info).derive(k)

    okm_m, okm_s = derive(b"jasper/1 message"), derive(b"jasper/1 signature")
    assert okm_m[:32].hex() == mid["k_msg_hex"] and okm_m[32:].hex() == mid["n_msg_hex"]
    assert okm_s[:32].hex() == mid["k_sig_hex"] and okm_s[32:].hex() == mid["n_sig_hex"]
    inner = AESGCM(okm_m[:32]).decrypt(okm_m[32:], message[513:], b"jasper/1 message\x01")
    assert inner == expected_plaintext(v)
    # The padding is JSON whitespace: the plaintext parses as the inner JSON does.
    assert json.loads(inner) == json.loads(inputs["inner_json"])
    assert hashlib.sha256(inner).hexdigest() == mid["inner_json_sha256_hex"]
    plain = AESGCM(okm_s[:32]).decrypt(okm_s[32:], signature[1:], b"jasper/1 signature\x01")
    assert plain.hex() == mid["signature_plaintext_hex"]

    assert int.from_bytes(plain[:2], "big") == 512
    sig, n = plain[2:514], int.from_bytes(plain[514:518], "big")
    fps = [plain[518 + 32 * i : 550 + 32 * i] for i in range(n)]
    assert len(plain) == 518 + 32 * n
    assert fps == sorted({fingerprint(key) for key in addressed})

    signed = b"jasper/1 signed\0" + hashlib.sha256(inner).digest() + plain[514:]
    assert signed.hex() == mid["signed_bytes_hex"]
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    sender.public_key().verify(sig, signed, pss, hashes.SHA256())
    # Undo PSS by hand to confirm the injected salt (RFC 8017 9.1.2 steps 7-10).
    pub = sender.public_key().public_numbers()
    em = raw_rsa(sig, pub.e, pub.n)
    masked_db, h = em[: 512 - 33], em[512 - 33 : 512 - 1]
    db = bytes(a ^ b for a, b in zip(masked_db, mgf1(h, len(masked_db))))
    assert db[-32:].hex() == inputs["pss_salt_hex"]

    padded = "padding" if "padding" in v else "no padding"
    print(f"{name}: OK (OAEP seed, K, HKDF, AES-GCM, {padded}, signed bytes, PSS salt, set)")


def main():
    check("envelope-v1.json")
    check("envelope-v1-padded.json")


if __name__ == "__main__":
    main()
