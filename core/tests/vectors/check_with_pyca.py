#!/usr/bin/env python3
"""Independent check of envelope-v1.json with pyca/cryptography (OpenSSL), so the vector is
confirmed by a second implementation and not only by the Rust code that wrote it.

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


def main():
    v = json.loads((HERE / "envelope-v1.json").read_text())
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
    assert inner == inputs["inner_json"].encode()
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

    print("envelope-v1.json: OK (OAEP seed, K, HKDF, AES-GCM, signed bytes, PSS salt, set)")


if __name__ == "__main__":
    main()
