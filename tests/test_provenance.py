"""Provenance evidence (C2PA, XMP, PNG text, EXIF) read from real files made here; never read by the label."""
import ast
import datetime
import io
import json
import socket
import struct
import zlib
from pathlib import Path

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from attribution import Attributor
from attribution.provenance import (MAX_VALUE_CHARS, ProvenanceReader, ProvenanceRecord, ProvenanceReport,
                                    _c2pa_evidence, _c2pa_summary, provenance_column, read_provenance,
                                    summary_markdown)
from attribution.transform import load_image
from conftest import DEV_DATA, make_image, png_chunk, with_png_chunks

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
A1111 = ("a photo of a cat wearing a hat, highly detailed " * 40 + "\nNegative prompt: blurry\n"
         "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, "
         "Model: v1-5-pruned-emaonly, Version: v1.6.0")
COMFY_PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}},
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}}


def png_bytes(seed: int = 0, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    image.save(buf, "JPEG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def with_jpeg_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment inserted after SOI (the entropy-coded pixels are untouched)."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def text_chunk(key: str, text: str) -> bytes:
    return png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + text.encode("latin-1"))


def ztxt_chunk(key: str, text: str) -> bytes:
    return png_chunk(b"zTXt", key.encode("latin-1") + b"\x00\x00" + zlib.compress(text.encode("latin-1")))


def itxt_chunk(key: str, text: str) -> bytes:
    return png_chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def xmp_packet(body: str) -> str:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'{body}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def exif_block(**tags: str) -> bytes:
    names = {"Make": 0x010F, "Model": 0x0110, "Software": 0x0131}
    exif = Image.Exif()
    for name, value in tags.items():
        exif[names[name]] = value
    return exif.tobytes()


# ----------------------------------------------------------------------------------------- C2PA chain
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """An EC P-256 CA and a leaf the C2PA SDK accepts for signing offline (SKI/AKI, digitalSignature,
    emailProtection EKU); the CA is written as a PEM trust-anchor file."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Attribution Tests")])

    def usage(**on):
        flags = dict.fromkeys(["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"], False)
        return x509.KeyUsage(**{**flags, **on})

    def base(subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (base(name("Test Root CA"), name("Test Root CA"), ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (base(name("Test Signer"), ca.subject, leaf_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    anchors = tmp_path_factory.mktemp("c2pa") / "anchors.pem"
    anchors.write_bytes(ca.public_bytes(pem))
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"certs": leaf.public_bytes(pem) + ca.public_bytes(pem), "key": key, "anchors": anchors}


def manifest(source_type: str = "trainedAlgorithmicMedia", agent: str = "Test Image Model") -> dict:
    return {"claim_generator_info": [{"name": "attribution-tests", "version": "1.0"}], "title": "test.png",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": IPTC + source_type,
                 "softwareAgent": {"name": agent}}]}}]}


def sign(chain, data: bytes, mime: str, definition: dict, remote_url: str | None = None) -> bytes:
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain["certs"], chain["key"], None))
    out = io.BytesIO()
    with signer, c2pa.Builder(definition) as builder:
        if remote_url:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def png_chunks(png: bytes):
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        yield png[pos + 4:pos + 8], png[pos:pos + 12 + length]
        pos += 12 + length


def change_pixels(signed_png: bytes) -> bytes:
    """The signed PNG with one pixel changed: its IDAT replaced, the manifest chunk kept as it was."""
    pixels = np.array(Image.open(io.BytesIO(signed_png)).convert("RGB"))
    pixels[0, 0] ^= 0xFF
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    idat = b"".join(c for kind, c in png_chunks(buf.getvalue()) if kind == b"IDAT")
    out, done = signed_png[:8], False
    for kind, c in png_chunks(signed_png):
        if kind == b"IDAT":
            out, done = (out, done) if done else (out + idat, True)
        else:
            out += c
    return out


@pytest.fixture(scope="module")
def signed_png(chain):
    return sign(chain, png_bytes(1), "image/png", manifest())


# ------------------------------------------------------------------------------------ generator metadata
def test_png_a1111_parameters_named_and_truncated():
    report = read_provenance(with_png_chunks(png_bytes(), text_chunk("parameters", A1111)))
    assert report.error is None and report.indication == "generated" and report.indication_source == "metadata"
    records = {r.field: r.value for r in report.records}
    assert records["parameters"].startswith("a photo of a cat") and len(records["parameters"]) <= MAX_VALUE_CHARS
    assert records["parameters.Model"] == "v1-5-pruned-emaonly"
    assert "Stable Diffusion web UI" in report.summary and "v1-5-pruned-emaonly" in report.summary
    assert "unsigned metadata" in report.summary
    assert all(set(r) == {"source", "field", "value"} for r in report.to_json()["records"])


def test_comfyui_prompt_and_compressed_workflow():
    workflow = json.dumps({"nodes": [{"id": 4, "type": "CheckpointLoaderSimple"}] * 200})
    data = with_png_chunks(png_bytes(), text_chunk("prompt", json.dumps(COMFY_PROMPT)),
                           ztxt_chunk("workflow", workflow))
    report = read_provenance(data)
    records = {(r.source, r.field): r.value for r in report.records}
    assert records[("png", "prompt.checkpoint")] == "sd_xl_base_1.0.safetensors"
    assert len(records[("png", "workflow")]) <= MAX_VALUE_CHARS
    assert "ComfyUI" in report.summary and report.indication == "generated"


def test_xmp_iptc_source_type_partly_generated_and_credit():
    xmp = xmp_packet('<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                     'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:Credit="Edited with Google AI">'
                     f'<Iptc4xmpExt:DigitalSourceType>{IPTC}compositeWithTrainedAlgorithmicMedia'
                     '</Iptc4xmpExt:DigitalSourceType></rdf:Description>')
    report = read_provenance(with_png_chunks(png_bytes(), itxt_chunk("XML:com.adobe.xmp", xmp)))
    records = {r.field: r.value for r in report.records}
    assert records["Iptc4xmpExt:DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
    assert records["photoshop:Credit"] == "Edited with Google AI"
    assert report.indication == "partly_generated" and report.indication_source == "xmp"
    assert "partly generated" in report.summary and "unsigned metadata" in report.summary


def test_jpeg_xmp_attribute_form_generated():
    xmp = xmp_packet('<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                     f'Iptc4xmpExt:DigitalSourceType="{IPTC}trainedAlgorithmicMedia"/>')
    report = read_provenance(with_jpeg_app1(jpeg_bytes(), b"http://ns.adobe.com/xap/1.0/\x00" + xmp.encode()))
    assert report.indication == "generated" and "generated by AI (IPTC trainedAlgorithmicMedia)" in report.summary


def test_jpeg_exif_software_and_camera():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS R5", "GIMP 2.10.36"
    report = read_provenance(jpeg_bytes(exif=exif))
    assert {(r.source, r.field, r.value) for r in report.records} == {
        ("exif", "Make", "Canon"), ("exif", "Model", "Canon EOS R5"), ("exif", "Software", "GIMP 2.10.36")}
    assert report.summary.startswith("metadata names camera Canon EOS R5, software GIMP 2.10.36")
    assert report.indication == "camera"
    generator = read_provenance(with_jpeg_app1(jpeg_bytes(), exif_block(Software="ComfyUI v0.3")))
    assert generator.indication == "generated" and "ComfyUI v0.3" in generator.summary


def test_no_records_says_it_proves_nothing(tmp_path):
    path = make_image(tmp_path / "plain.png")
    report = read_provenance(path)
    assert report.records == [] and report.indication is None and report.c2pa is None
    assert report.summary.startswith("no provenance records") and "proves nothing" in report.summary
    assert report.to_json()["c2pa"] is None


# ------------------------------------------------------------------------------------------------ C2PA
def test_c2pa_signed_reads_untrusted_without_anchors_and_valid_with_them(chain, signed_png):
    report = read_provenance(signed_png)
    assert report.error is None, report.error
    evidence = report.c2pa
    assert evidence.validation == "untrusted" and evidence.signature_valid and not evidence.trusted
    assert evidence.signer == "Test Signer" and evidence.issuer == "Attribution Tests"
    assert evidence.claim_generator.startswith("attribution-tests 1.0")
    assert evidence.actions == [{"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia",
                                 "software_agent": "Test Image Model"}]
    assert report.indication == "generated" and report.indication_source == "c2pa"
    assert "signature valid" in report.summary and "not on a trust list" in report.summary
    assert "claims created by Test Image Model, generated by AI" in report.summary
    assert ("c2pa", "signer", "Test Signer (issuer Attribution Tests)") in {
        (r.source, r.field, r.value) for r in report.records}

    trusted = read_provenance(signed_png, trust_anchors=chain["anchors"])
    assert trusted.c2pa.validation == "valid" and trusted.c2pa.trusted
    assert "Test Signer on your trust list" in trusted.summary


def test_c2pa_pixels_changed_after_signing_is_a_hash_mismatch(signed_png):
    report = read_provenance(change_pixels(signed_png))
    assert report.c2pa.validation == "hash_mismatch" and report.c2pa.signature_valid
    assert any(code.endswith("Hash.mismatch") for code in report.c2pa.failures)
    assert "changed after signing" in report.summary and report.indication is None


def test_c2pa_claim_changed_after_signing_is_an_invalid_signature(signed_png):
    at = signed_png.index(b"attribution-tests")
    report = read_provenance(signed_png[:at] + b"attribution-fests" + signed_png[at + 17:])
    assert report.c2pa.validation == "invalid_signature" and not report.c2pa.signature_valid
    assert "cannot be relied on" in report.summary and report.indication is None


def checks_of(report: ProvenanceReport) -> dict[str, tuple[bool, str]]:
    return {c.check: (c.passed, c.detail) for c in report.c2pa.checks}


def test_c2pa_intact_but_untrusted_manifest_is_summarised_as_exactly_that(chain, signed_png):
    """Signature and hashes validate, the certificate is on no trust list: the summary, the checks and the panel
    say which checks passed and which failed and why; never that the claims cannot be relied on."""
    report = read_provenance(signed_png)
    checks = checks_of(report)
    assert checks["claim_signature"] == (True, "claim signature valid")
    assert checks["hashes"][0] and "unchanged since signing" in checks["hashes"][1]
    assert checks["trust"] == (False, "no trust anchors are configured (--c2pa-trust-anchors), so who signed it is "
                                      "not confirmed")
    assert checks["certificate"][0] and "timestamp" not in checks  # the test signer adds no timestamp
    assert "signature valid, hashes match, signer Test Signer not on a trust list" in report.summary
    assert "cannot be relied on" not in report.summary
    panel = summary_markdown(ProvenanceReport.from_json(report.to_json()))  # the panel from the JSON alone
    assert "- passed: claim signature valid" in panel
    assert "- **failed**: no trust anchors are configured" in panel
    json_checks = report.to_json()["c2pa"]["checks"]
    assert {c["check"] for c in json_checks} == set(checks) and all(set(c) == {"check", "passed", "detail", "codes"}
                                                                     for c in json_checks)
    other = ProvenanceReader(make_anchor_file(chain))(signed_png)  # anchors given, the signer not under them
    assert checks_of(other)["trust"] == (False, "the signer's certificate does not chain to any of your trust anchors")
    trusted = checks_of(read_provenance(signed_png, trust_anchors=chain["anchors"]))
    assert trusted["trust"][0] and all(passed for passed, _ in trusted.values())


def make_anchor_file(chain) -> Path:
    """A PEM file holding an unrelated self-signed CA (so the test signer does not chain to it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unrelated CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    path = chain["anchors"].parent / "unrelated.pem"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return path


# c2pa-python 0.38's report on a 2023 Bing Image Creator (DALL-E 3) JPEG, shortened: signature, hashes and timestamp
# validate; the certificate fails only on a missing extended key usage and on having no trust anchors
BING_STORE = {
    "active_manifest": "urn:uuid:m",
    "manifests": {"urn:uuid:m": {
        "claim_generator": "Microsoft_Responsible_AI/1.0", "signature_info": {
            "issuer": "Microsoft Corporation", "common_name": "Microsoft Corporation",
            "time": "2023-10-04T22:44:25+00:00"},
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "softwareAgent": "Bing Image Creator",
             "digitalSourceType": IPTC + "trainedAlgorithmicMedia"}]}}]}},
    "validation_results": {"activeManifest": {
        "success": [
            {"code": "timeStamp.validated", "explanation": "timestamp message digest matched: DigiCert Timestamp 2023"},
            {"code": "timeStamp.trusted", "explanation": "legacy timestamp cert trusted: DigiCert Timestamp 2023"},
            {"code": "claimSignature.insideValidity", "explanation": "claim signature valid"},
            {"code": "claimSignature.validated", "explanation": "claim signature valid"},
            {"code": "assertion.hashedURI.match", "explanation": "hashed uri matched"},
            {"code": "assertion.boxesHash.match", "explanation": "boxes hash valid"}],
        "informational": [{"code": "signingCredential.ocsp.skipped", "explanation": "OCSP fetching skipped"}],
        "failure": [
            {"code": "signingCredential.untrusted", "explanation": "signing certificate untrusted"},
            {"code": "signingCredential.invalid", "explanation": "certificate missing required EKU"}]}},
    "validation_state": "Invalid"}


def test_c2pa_certificate_without_the_required_eku_reads_as_c2pa_reported_it():
    evidence = _c2pa_evidence(BING_STORE, has_anchors=False)
    assert evidence.validation == "invalid_certificate" and evidence.signature_valid and evidence.intact()
    checks = {c.check: (c.passed, c.detail) for c in evidence.checks}
    assert checks["claim_signature"][0] and checks["hashes"][0]
    assert checks["timestamp"] == (True, "timestamp valid (DigiCert Timestamp 2023)")
    assert checks["certificate"] == (False, "the signing certificate lacks the extended key usage (EKU) that C2PA "
                                            "requires of a signing certificate")
    assert not checks["trust"][0] and "no trust anchors are configured" in checks["trust"][1]
    summary = _c2pa_summary(evidence, has_anchors=False)
    assert "cannot be relied on" not in summary and "rejected" not in summary
    assert summary.startswith("signed manifest: claim signature valid, hashes match (the file is unchanged since "
                              "signing), timestamp valid (DigiCert Timestamp 2023); but the signing certificate "
                              "lacks the extended key usage")
    assert "no trust anchors are configured" in summary and "created by Bing Image Creator" in summary
    panel = summary_markdown(ProvenanceReport.from_json(ProvenanceReport(summary, c2pa=evidence).to_json()))
    assert "- passed: hashes match" in panel and "- **failed**: the signing certificate lacks" in panel


def test_a_real_bing_dalle3_file_if_the_dev_data_is_here():
    files = sorted((DEV_DATA / "dalle3").glob("2023-10-04_*.jpeg"))
    if not files:
        pytest.skip("needs the dev data")
    report = read_provenance(files[0])
    assert report.c2pa.signature_valid and report.c2pa.intact(), report.to_json()
    assert "cannot be relied on" not in report.summary and "extended key usage" in report.summary


def test_c2pa_camera_manifest_against_generator_pixels(chain):
    report = read_provenance(sign(chain, png_bytes(2), "image/png", manifest("digitalCapture", "Test Camera")))
    assert report.indication == "camera" and "camera capture" in report.summary
    text = summary_markdown(report, "stable_diffusion_v1")
    assert "content credentials say camera, the pixels say generator (`stable_diffusion_v1`)" in text


def test_reading_is_offline(chain, signed_png, monkeypatch):
    """No socket is opened from Python, and the C2PA library does not fetch a remote manifest: a local
    listener named as the manifest's URL gets no connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/manifest.c2pa"
    remote = sign(chain, jpeg_bytes(3), "image/jpeg", manifest(), remote_url=url)

    def refuse(*args, **kwargs):
        raise AssertionError("provenance reading tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    reader = ProvenanceReader(chain["anchors"])
    assert reader(signed_png).c2pa.validation == "valid"
    report = reader(remote)
    assert report.c2pa.validation == "remote" and report.c2pa.remote_url == url
    assert "not fetched" in report.summary
    assert ("xmp", "dcterms:provenance", url) in {(r.source, r.field, r.value) for r in report.records}
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()


# ----------------------------------------------------------------------------------- bad and huge input
def bomb_chunk() -> bytes:
    return png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (8 * 2**20), 9))


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
                  '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>')


@pytest.mark.parametrize("make, code", [
    (lambda: png_bytes()[:60], "malformed"),
    (lambda: with_png_chunks(png_bytes(), text_chunk("Comment", "x" * (5 * 2**20))), "too_large"),
    (lambda: with_png_chunks(png_bytes(), bomb_chunk()), "too_large"),
    (lambda: with_png_chunks(png_bytes(), png_chunk(b"zTXt", b"Comment\x00\x00not zlib")), "malformed"),
    (lambda: with_png_chunks(png_bytes(), *[text_chunk("Comment", str(i)) for i in range(100)]), "too_large"),
    (lambda: with_png_chunks(png_bytes(), itxt_chunk("XML:com.adobe.xmp", "<x:xmpmeta><rdf:RDF></x:xmpmeta>")),
     "malformed"),
    (lambda: with_png_chunks(png_bytes(), itxt_chunk("XML:com.adobe.xmp", BILLION_LAUGHS)), "malformed"),
    (lambda: with_jpeg_app1(jpeg_bytes(), b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f"), "malformed"),
    (lambda: jpeg_bytes()[:300], "malformed"),
    (lambda: b"this is text, not an image", "unrecognised_format"),
])
def test_malformed_or_huge_metadata_is_a_per_file_error(make, code):
    report = read_provenance(make())
    assert report.error and report.error_code == code, (report.error, report.to_json())
    assert report.to_json() == {"error": report.error, "error_code": code}
    assert provenance_column(report).startswith(f"could not be read ({code})")


def test_file_size_limit_and_missing_file(tmp_path):
    path = make_image(tmp_path / "big.png", size=256)
    report = ProvenanceReader(max_bytes=1000)(path)
    assert report.error_code == "too_large"
    missing = read_provenance(tmp_path / "missing.png")
    assert missing.to_json() is None and missing.reason.startswith("file could not be read")


def test_decoded_images_have_no_file_bytes():
    for image in (np.zeros((8, 8, 3), np.uint8), Image.new("RGB", (8, 8))):
        report = read_provenance(image)
        assert report.to_json() is None and "no file bytes" in report.reason
        assert provenance_column(report).startswith("not read:")


def test_bad_trust_anchors_are_refused(tmp_path):
    (tmp_path / "none.pem").write_text("not a certificate")
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for name in ("none.pem", "bad.pem", "missing.pem"):
        with pytest.raises(ValueError, match="trust anchors"):
            ProvenanceReader(tmp_path / name)


# -------------------------------------------------------------------------------------- panel rendering
def test_summary_markdown_records_and_disagreement():
    camera = ProvenanceReport(summary="metadata names camera Canon EOS R5", indication="camera",
                              indication_source="metadata",
                              records=[ProvenanceRecord("exif", "Model", "Canon | EOS R5")])
    text = summary_markdown(camera, "dalle3")
    assert text.startswith("**Provenance:** metadata names camera Canon EOS R5")
    assert "| exif | Model | Canon \\| EOS R5 |" in text
    assert "the metadata say camera, the pixels say generator (`dalle3`)" in text
    assert "disagree" not in summary_markdown(camera, "real") and "disagree" not in summary_markdown(camera)
    assert "the pixels say generator (`unknown`)" in summary_markdown(camera, "unknown")

    generated = ProvenanceReport(summary="signed manifest ...", indication="generated", indication_source="c2pa")
    assert "content credentials say generator, the pixels say camera (`real`)" in summary_markdown(generated, "real")
    assert "disagree" not in summary_markdown(generated, "dalle3")
    partly = ProvenanceReport(summary="XMP says partly generated", indication="partly_generated",
                              indication_source="xmp")
    assert "XMP metadata say partly generated, the pixels say camera" in summary_markdown(partly, "real")

    nothing = ProvenanceReport(summary="no provenance records (...)")
    assert summary_markdown(nothing, "real") == "**Provenance:** no provenance records (...)"
    failed = ProvenanceReport.failed("malformed XMP: x", "malformed")
    assert summary_markdown(failed, "real") == "**Provenance:** could not be read (malformed): malformed XMP: x"
    assert "\n" not in provenance_column(camera)


# ------------------------------------------------------------------------ the label never reads metadata
def _generator_images(tmp_path):
    """A generator PNG and JPEG: from the dev set when it is here (the JPEG carries a real C2PA
    manifest), else synthetic."""
    pngs = sorted((DEV_DATA / "stable_diffusion_v1").glob("*.png"))[:1]
    jpegs = sorted((DEV_DATA / "dalle3").glob("*.jpeg"))[:1]
    png = pngs[0].read_bytes() if pngs else make_image(tmp_path / "g.png", size=256).read_bytes()
    jpeg = jpegs[0].read_bytes() if jpegs else make_image(tmp_path / "g.jpg", size=256, fmt="JPEG").read_bytes()
    return png, jpeg


def _strip_png(png: bytes) -> bytes:
    return png[:8] + b"".join(c for kind, c in png_chunks(png) if kind in (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"))


def _strip_jpeg(jpeg: bytes) -> bytes:
    """Every APPn (EXIF, XMP, C2PA) and comment segment removed, except APP0 (JFIF) and APP14 (Adobe colour
    transform), which decoding needs; the entropy-coded data is copied as it is."""
    out, pos = jpeg[:2], 2
    while jpeg[pos + 1] != 0xDA:
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        marker = jpeg[pos + 1]
        if not (0xE1 <= marker <= 0xEF and marker != 0xEE) and marker != 0xFE:
            out += jpeg[pos:pos + 2 + length]
        pos += 2 + length
    return out + jpeg[pos:]


def test_label_never_reads_metadata(tmp_path, one_torch_thread):
    png, jpeg = _generator_images(tmp_path)
    canon = exif_block(Make="Canon", Model="Canon EOS R5")
    variants = {
        "png stripped": _strip_png(png),
        "png + A1111 parameters": with_png_chunks(_strip_png(png), text_chunk("parameters", A1111)),
        "png + EXIF Make Canon": with_png_chunks(_strip_png(png), png_chunk(b"eXIf", canon[6:])),
        "jpeg stripped": _strip_jpeg(jpeg),
        "jpeg + EXIF Make Canon": with_jpeg_app1(_strip_jpeg(jpeg), canon),
        "jpeg as published": jpeg,
    }
    assert read_provenance(variants["png + EXIF Make Canon"]).indication == "camera"
    assert read_provenance(variants["jpeg + EXIF Make Canon"]).indication == "camera"
    assert read_provenance(variants["png + A1111 parameters"]).indication == "generated"
    assert read_provenance(variants["png stripped"]).records == []
    shared = Attributor.from_pretrained()
    results = {}
    for name, data in variants.items():
        fresh = Attributor(shared.backbone, shared.head, shared.config)  # its own feature cache
        out = fresh([data])[0]
        assert out.error is None, out.error
        results[name] = (out.label, out.scores, out.unknown_score)
    for kind in ("png", "jpeg"):
        stripped = results[f"{kind} stripped"]
        for name, result in results.items():
            if name.startswith(kind):
                assert result == stripped, name
    assert np.array_equal(np.asarray(load_image(variants["jpeg as published"])),
                          np.asarray(load_image(variants["jpeg + EXIF Make Canon"])))


def test_pixel_path_never_imports_provenance():
    """Layering: provenance is a sibling of decoding; only the CLI and the renderers of a row (its evidence, the
    report) use it, besides the package's lazy re-exports."""
    package = Path(__file__).resolve().parent.parent / "attribution"
    users = {path.relative_to(package).as_posix() for path in package.rglob("*.py")
             if "provenance" in {alias for node in ast.walk(ast.parse(path.read_text()))
                                 if isinstance(node, (ast.Import, ast.ImportFrom))
                                 for alias in [getattr(node, "module", None) or ""] + [a.name for a in node.names]}}
    assert users == {"cli.py", "evidence.py", "report.py"}  # the package's re-exports load it lazily, by name
