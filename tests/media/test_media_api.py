"""The media repository over HTTP, on the whole homeserver (both databases via SC_TEST_POSTGRES)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any
from urllib.parse import quote

from homeserver.config.media import DEFAULT_THUMBNAIL_SIZES
from media.repository import MediaRepository
from tests.homeserver.server_case import FullHomeserverTestCase
from tests.media import samples
from tests.unittest import FakeChannel, override_config

UPLOAD = "/_matrix/media/v3/upload"
CREATE = "/_matrix/media/v1/create"
MEDIA = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"
CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';"
)


class MediaTestCase(FullHomeserverTestCase):
    """alice and bob logged in; an admin; media stored in a fresh directory."""

    def default_config(self) -> dict[str, Any]:
        config = super().default_config()
        self.media_dir = tempfile.mkdtemp(prefix="sc-media-test-")
        self.addCleanup(shutil.rmtree, self.media_dir, True)
        config["media"] = {"media_store_path": self.media_dir}
        return config

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.register_user("root", admin=True)
        self.alice = self.login("alice")["access_token"]
        self.bob = self.login("bob")["access_token"]
        self.admin = self.login("root")["access_token"]

    def upload(
        self, data: bytes, content_type: str | None = "application/octet-stream", token: str | None = None,
        filename: str | None = None, **kwargs: Any,
    ) -> FakeChannel:
        path = UPLOAD + (f"?filename={quote(filename)}" if filename is not None else "")
        headers = [("Content-Type", content_type)] if content_type is not None else []
        return self.make_request("POST", path, data, access_token=token or self.alice, headers=headers, **kwargs)

    def upload_ok(self, data: bytes, content_type: str | None = None, **kwargs: Any) -> str:
        channel = self.upload(data, content_type, **kwargs)
        self.assertEqual(channel.code, 200, channel.json_body)
        uri: str = channel.json_body["content_uri"]
        self.assertTrue(uri.startswith("mxc://test:8448/"))
        return uri[len("mxc://") :]

    def download(self, server_and_id: str, token: str | None = None, suffix: str = "", **kwargs: Any) -> FakeChannel:
        return self.make_request(
            "GET", f"{MEDIA}/download/{server_and_id}{suffix}", access_token=token or self.alice, **kwargs
        )

    def thumbnail(self, server_and_id: str, query: str, token: str | None = None) -> FakeChannel:
        return self.make_request("GET", f"{MEDIA}/thumbnail/{server_and_id}?{query}", access_token=token or self.alice)

    def blob_files(self) -> list[str]:
        found = []
        for directory, _dirs, files in os.walk(os.path.join(self.media_dir, "blobs")):
            found.extend(os.path.join(directory, f) for f in files)
        return found

    def image_size(self, data: bytes) -> tuple[int, int]:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size


class UploadDownloadTests(MediaTestCase):
    def test_small_round_trip_is_byte_identical(self) -> None:
        """An upload comes back byte for byte with its type, a filename and every security header."""
        mxc = self.upload_ok(samples.TEXT, "text/plain", filename="notes.txt")
        channel = self.download(mxc)
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.result["body"], samples.TEXT)
        self.assertEqual(channel.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(channel.header("Content-Disposition"), 'inline; filename="notes.txt"')
        self.assertEqual(channel.header("Content-Security-Policy"), CSP)
        self.assertEqual(channel.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(channel.header("Cross-Origin-Resource-Policy"), "cross-origin")
        self.assertIn("max-age", channel.header("Cache-Control") or "")
        self.assertEqual(channel.header("Access-Control-Allow-Origin"), "*")

    def test_large_round_trip(self) -> None:
        """A ~20 MB upload (streamed to disk by the request) downloads identically, and ranges work on it."""
        data = samples.PDF + os.urandom(20 * 1024 * 1024)
        mxc = self.upload_ok(data, "application/pdf")
        channel = self.download(mxc)
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.result["body"], data)
        self.assertEqual(channel.header("Content-Disposition"), "attachment")
        ranged = self.download(mxc, headers=[("Range", "bytes=10000000-10000099")])
        self.assertEqual(ranged.code, 206)
        self.assertEqual(ranged.result["body"], data[10_000_000:10_000_100])
        self.assertEqual(ranged.header("Content-Range"), f"bytes 10000000-10000099/{len(data)}")

    def test_ranges(self) -> None:
        """Suffix and open ranges give 206; a range past the end gives 416 with Content-Range */size."""
        data = samples.PDF + bytes(range(256)) * 8
        mxc = self.upload_ok(data, "application/pdf")
        suffix = self.download(mxc, headers=[("Range", "bytes=-10")])
        self.assertEqual((suffix.code, suffix.result["body"]), (206, data[-10:]))
        open_ended = self.download(mxc, headers=[("Range", "bytes=100-")])
        self.assertEqual((open_ended.code, open_ended.result["body"]), (206, data[100:]))
        beyond = self.download(mxc, headers=[("Range", f"bytes={len(data)}-")])
        self.assertEqual(beyond.code, 416)
        self.assertEqual(beyond.header("Content-Range"), f"bytes */{len(data)}")
        self.assertEqual(beyond.header("X-Content-Type-Options"), "nosniff")
        several = self.download(mxc, headers=[("Range", "bytes=0-1,5-6")])
        self.assertEqual((several.code, several.result["body"]), (200, data))

    def test_head_request(self) -> None:
        """HEAD answers the headers (with the full length) and no body."""
        mxc = self.upload_ok(samples.PDF, "application/pdf")
        channel = self.make_request("HEAD", f"{MEDIA}/download/{mxc}", access_token=self.alice)
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.header("Content-Length"), str(len(samples.PDF)))

    def test_filename_override_and_unicode_filename(self) -> None:
        """A path file name overrides the stored one; non-ASCII names use RFC 6266 filename*."""
        mxc = self.upload_ok(samples.PDF, "application/pdf", filename="report.pdf")
        channel = self.download(mxc, suffix="/" + quote("résumé.pdf"))
        self.assertEqual(channel.header("Content-Disposition"), "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf")
        quoted = self.download(mxc, suffix="/a%22b.pdf")
        self.assertEqual(quoted.header("Content-Disposition"), "attachment; filename*=utf-8''a%22b.pdf")

    def test_no_filename_means_no_filename_parameter(self) -> None:
        """Without a filename the disposition carries none (spec)."""
        mxc = self.upload_ok(samples.image_bytes("PNG"), "image/png")
        self.assertEqual(self.download(mxc).header("Content-Disposition"), "inline")

    def test_bad_filenames_refused(self) -> None:
        """Control characters (header injection) and overlong names are 400 M_INVALID_PARAM."""
        for name in ("a\r\nSet-Cookie: x", "x" * 300):
            channel = self.upload(samples.TEXT, "text/plain", filename=name)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_unauthenticated_access_refused(self) -> None:
        """Authenticated endpoints answer 401 M_MISSING_TOKEN without a token and M_UNKNOWN_TOKEN for a bad one."""
        mxc = self.upload_ok(samples.TEXT, "text/plain")
        for path in (f"{MEDIA}/download/{mxc}", f"{MEDIA}/thumbnail/{mxc}?width=32&height=32", f"{MEDIA}/config"):
            channel = self.make_request("GET", path)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_MISSING_TOKEN"), path)
        bad = self.make_request("GET", f"{MEDIA}/download/{mxc}", access_token="nope")
        self.assertEqual((bad.code, bad.json_body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        upload = self.make_request("POST", UPLOAD, samples.TEXT, headers=[("Content-Type", "text/plain")])
        self.assertEqual(upload.code, 401)

    def test_unknown_remote_and_malformed_ids(self) -> None:
        """Unknown local media and remote media are 404; malformed media IDs are 400."""
        self.assertEqual(self.download("test/doesNotExist").json_body["errcode"], "M_NOT_FOUND")
        self.assertEqual(self.download("other.example/abc").code, 404)
        self.assertEqual(self.download("test/bad%2E%2E").code, 400)
        self.assertEqual(self.download("test/a/b/c").code, 404)

    def test_config_and_preview_url(self) -> None:
        """config advertises m.upload.size; preview_url is 404 M_UNRECOGNIZED (off)."""
        channel = self.make_request("GET", f"{MEDIA}/config", access_token=self.alice)
        self.assertEqual(channel.json_body, {"m.upload.size": 50 * 1024 * 1024})
        preview = self.make_request("GET", f"{MEDIA}/preview_url?url=https://example.org", access_token=self.alice)
        self.assertEqual((preview.code, preview.json_body["errcode"]), (404, "M_UNRECOGNIZED"))

    def test_identical_uploads_share_one_blob(self) -> None:
        """Two uploads of the same bytes are two media IDs over one stored file."""
        first = self.upload_ok(samples.PDF, "application/pdf")
        second = self.upload_ok(samples.PDF, "application/pdf", token=self.bob)
        self.assertNotEqual(first, second)
        self.assertEqual(len(self.blob_files()), 1)


class ValidationTests(MediaTestCase):
    def test_declared_type_contradicting_content_refused(self) -> None:
        """STORAGE-2: HTML declared as image/png, or a PDF declared as a JPEG, is 400 and stores nothing."""
        for data, declared in ((samples.HTML, "image/png"), (samples.PDF, "image/jpeg"), (samples.image_bytes("PNG"), "text/plain")):
            channel = self.upload(data, declared)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), declared)
        self.assertEqual(self.blob_files(), [])
        self.assertEqual(os.listdir(os.path.join(self.media_dir, "tmp")), [])

    def test_disallowed_types_refused(self) -> None:
        """STORAGE-1 / SEC-13: HTML, SVG and executables are 403 M_FORBIDDEN even when declared generically."""
        for data in (samples.HTML, samples.SVG, samples.ELF, samples.PE):
            for declared in (None, "application/octet-stream"):
                channel = self.upload(data, declared)
                self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.blob_files(), [])

    def test_encrypted_attachments_accepted(self) -> None:
        """Ciphertext (E2EE attachments) has no recognisable type: stored and served as an octet-stream attachment."""
        mxc = self.upload_ok(samples.CIPHERTEXT, "application/octet-stream")
        channel = self.download(mxc)
        self.assertEqual(channel.result["body"], samples.CIPHERTEXT)
        self.assertEqual(channel.header("Content-Type"), "application/octet-stream")
        self.assertEqual(channel.header("Content-Disposition"), "attachment")

    @override_config({"media": {"allowed_content_types": ["image/*"]}})
    def test_allow_list_is_configurable(self) -> None:
        """With an images-only allow list a PDF is refused and a PNG accepted."""
        self.assertEqual(self.upload(samples.PDF, "application/pdf").code, 403)
        self.upload_ok(samples.image_bytes("PNG"), "image/png")

    def test_detected_type_is_stored_for_generic_declarations(self) -> None:
        """A JPEG uploaded as application/octet-stream (or without a type) is served as image/jpeg."""
        for declared in ("application/octet-stream", None):
            mxc = self.upload_ok(samples.image_bytes("JPEG"), declared)
            self.assertEqual(self.download(mxc).header("Content-Type"), "image/jpeg")

    def test_compatible_declared_spelling_kept(self) -> None:
        """text/csv for UTF-8 text is kept and served inline; an office zip is served as attachment."""
        mxc = self.upload_ok(b"a,b\n1,2\n", "text/csv; charset=utf-8")
        self.assertEqual(self.download(mxc).header("Content-Type"), "text/csv; charset=utf-8")
        odt = samples.zip_bytes({"content.xml": b"<x/>"}, mimetype="application/vnd.oasis.opendocument.text")
        doc = self.upload_ok(odt, "application/zip", filename="a.odt")
        self.assertEqual(self.download(doc).header("Content-Disposition"), 'attachment; filename="a.odt"')

    def test_corrupt_and_bomb_images_refused(self) -> None:
        """A truncated PNG and a PNG header claiming 100000x100000 pixels are 400 M_INVALID_PARAM."""
        png = samples.image_bytes("PNG", (200, 200))
        truncated = self.upload(png[: len(png) // 2], "image/png")
        self.assertEqual((truncated.code, truncated.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        bomb = bytearray(png)
        bomb[16:24] = (100_000).to_bytes(4, "big") * 2
        self.assertEqual(self.upload(bytes(bomb), "image/png").code, 400)

    @override_config({"media": {"max_upload_size": 1000}})
    def test_oversized_body_refused_before_it_is_read(self) -> None:
        """A Content-Length over m.upload.size is 413 M_TOO_LARGE at once, without the body being sent."""
        channel = self.upload(b"x" * 10, "text/plain", content_length=50_000_000)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertTrue(channel.transport.disconnecting)

    @override_config({"media": {"max_upload_size": 1000}})
    def test_oversized_chunked_body_refused_while_receiving(self) -> None:
        """A chunked body growing past the limit is cut off with 413."""
        channel = self.upload(b"y" * 5000, "text/plain", chunked=True)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(self.blob_files(), [])


class AsyncUploadTests(MediaTestCase):
    def create(self, token: str | None = None) -> tuple[str, dict[str, Any]]:
        channel = self.make_request("POST", CREATE, {}, access_token=token or self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        return channel.json_body["content_uri"][len("mxc://") :], channel.json_body

    def put(self, mxc: str, data: bytes, token: str | None = None, content_type: str = "text/plain") -> FakeChannel:
        return self.make_request(
            "PUT", f"{LEGACY}/upload/{mxc}", data, access_token=token or self.alice, headers=[("Content-Type", content_type)]
        )

    def test_create_then_upload(self) -> None:
        """create returns an mxc URI and unused_expires_at (24 h); the PUT makes it downloadable."""
        mxc, body = self.create()
        self.assertEqual(body["unused_expires_at"], self.clock.time_msec() + 24 * 3600 * 1000)
        self.assertEqual((self.put(mxc, samples.TEXT).code), 200)
        self.assertEqual(self.download(mxc).result["body"], samples.TEXT)

    def test_overwrite_and_other_user_refused(self) -> None:
        """A second PUT is 409 M_CANNOT_OVERWRITE_MEDIA; another user's PUT is 403 M_FORBIDDEN."""
        mxc, _ = self.create()
        other = self.put(mxc, samples.TEXT, token=self.bob)
        self.assertEqual((other.code, other.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.put(mxc, samples.TEXT).code, 200)
        again = self.put(mxc, samples.TEXT)
        self.assertEqual((again.code, again.json_body["errcode"]), (409, "M_CANNOT_OVERWRITE_MEDIA"))

    def test_download_before_upload_waits_then_times_out(self) -> None:
        """A download of a reserved ID waits up to timeout_ms and then answers 504 M_NOT_YET_UPLOADED."""
        mxc, _ = self.create()
        channel = self.make_request(
            "GET", f"{MEDIA}/download/{mxc}?timeout_ms=3000", access_token=self.alice, await_result=False
        )
        self.pump(2.0)
        self.assertFalse(channel.is_finished())
        self.pump(1.5)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (504, "M_NOT_YET_UPLOADED"))

    def test_waiting_download_is_served_once_uploaded(self) -> None:
        """A waiting download completes with the bytes as soon as the upload lands."""
        mxc, _ = self.create()
        channel = self.make_request("GET", f"{MEDIA}/download/{mxc}", access_token=self.bob, await_result=False)
        self.pump(1.0)
        self.assertEqual(self.put(mxc, samples.TEXT).code, 200)
        channel.await_result()
        self.assertEqual((channel.code, channel.result["body"]), (200, samples.TEXT))

    def test_reservations_expire(self) -> None:
        """An unused reservation lapses after 24 h: upload is 404, and the cleanup deletes its row."""
        mxc, _ = self.create()
        self.reactor.advance(24 * 3600 + 1)
        channel = self.put(mxc, samples.TEXT)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.get_success(self.hs.features.get(MediaRepository).run_cleanup())
        self.assertIsNone(self.get_success(self.hs.features.find(MediaRepository).store.get_media(mxc.split("/")[1])))

    @override_config({"media": {"max_pending_uploads": 2}})
    def test_pending_reservations_limited(self) -> None:
        """A user holding max_pending_uploads reservations gets 429 M_LIMIT_EXCEEDED."""
        self.create()
        self.create()
        channel = self.make_request("POST", CREATE, {}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        self.create(token=self.bob)


class ThumbnailTests(MediaTestCase):
    def test_scale_and_crop_sizes(self) -> None:
        """scale fits the box keeping the aspect; crop has exactly the box's size; never smaller than asked."""
        mxc = self.upload_ok(samples.image_bytes("PNG", (1000, 500)), "image/png")
        cases = {
            "width=320&height=240&method=scale": (320, 160),
            "width=96&height=96&method=crop": (96, 96),
            "width=32&height=32&method=crop": (32, 32),
            "width=100&height=50&method=crop": (100, 50),
            "width=700&height=700&method=scale": (800, 400),  # the stored 800x600 one
            "width=900&height=900&method=scale": (900, 450),
        }
        for query, expected in cases.items():
            channel = self.thumbnail(mxc, query)
            self.assertEqual(channel.code, 200, query)
            self.assertEqual(self.image_size(channel.result["body"]), expected, query)
            self.assertEqual(channel.header("Content-Type"), "image/png")
            self.assertTrue((channel.header("Content-Disposition") or "").startswith("inline"))
            self.assertEqual(channel.header("Content-Security-Policy"), CSP)

    def test_pregenerated_sizes_are_stored(self) -> None:
        """Every configured size is generated at upload and stored as a blob; requests reuse them."""
        mxc = self.upload_ok(samples.image_bytes("JPEG", (1600, 1200)), "image/jpeg")
        media_id = mxc.split("/")[1]
        stored = self.get_success(self.hs.features.get(MediaRepository).store.get_thumbnails(media_id))
        self.assertEqual(len(stored), len(DEFAULT_THUMBNAIL_SIZES))
        self.assertEqual(len(self.blob_files()), 1 + len(DEFAULT_THUMBNAIL_SIZES))
        channel = self.thumbnail(mxc, "width=600&height=400&method=scale")
        self.assertEqual(self.image_size(channel.result["body"]), (640, 480))
        self.assertEqual(channel.header("Content-Type"), "image/jpeg")

    def test_small_image_returns_original(self) -> None:
        """Content smaller than the box is returned as is (spec: never upscale)."""
        data = samples.image_bytes("PNG", (20, 10))
        mxc = self.upload_ok(data, "image/png")
        self.assertEqual(self.thumbnail(mxc, "width=96&height=96&method=crop").result["body"], data)

    def test_animated_thumbnails(self) -> None:
        """animated=true gives an animated WebP; otherwise a static first frame (spec v1.11)."""
        import io

        from PIL import Image

        mxc = self.upload_ok(samples.animated_gif((400, 300)), "image/gif")
        animated = self.thumbnail(mxc, "width=96&height=96&method=crop&animated=true")
        self.assertEqual(animated.header("Content-Type"), "image/webp")
        with Image.open(io.BytesIO(animated.result["body"])) as image:
            self.assertGreater(getattr(image, "n_frames", 1), 1)
        static = self.thumbnail(mxc, "width=96&height=96&method=crop")
        self.assertEqual(static.header("Content-Type"), "image/png")
        small = self.upload_ok(samples.animated_gif((50, 40)), "image/gif")
        # Smaller than the box: the original for animated=true, a static frame otherwise.
        self.assertEqual(self.thumbnail(small, "width=96&height=96&animated=true").header("Content-Type"), "image/gif")
        self.assertEqual(self.thumbnail(small, "width=96&height=96").header("Content-Type"), "image/png")

    def test_bad_thumbnail_requests(self) -> None:
        """Missing or bad dimensions or methods are 400; non-images cannot be thumbnailed (400)."""
        mxc = self.upload_ok(samples.image_bytes("PNG"), "image/png")
        for query in ("width=32", "width=-1&height=5", "width=a&height=5", "width=32&height=32&method=zoom"):
            self.assertEqual(self.thumbnail(mxc, query).code, 400, query)
        pdf = self.upload_ok(samples.PDF, "application/pdf")
        channel = self.thumbnail(pdf, "width=32&height=32")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_UNKNOWN"))


class LegacyEndpointTests(MediaTestCase):
    def test_legacy_frozen_by_default(self) -> None:
        """The unauthenticated endpoints answer 404 for everything by default (spec freeze)."""
        mxc = self.upload_ok(samples.image_bytes("PNG", (200, 200)), "image/png")
        for path in (f"{LEGACY}/download/{mxc}", f"{LEGACY}/thumbnail/{mxc}?width=32&height=32",
                     f"/_matrix/media/r0/download/{mxc}"):
            channel = self.make_request("GET", path)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), path)
            self.assertEqual(channel.header("X-Content-Type-Options"), "nosniff")

    @override_config({"media": {"legacy_freeze_before_ms": 1_700_000_500_000}})
    def test_media_from_before_the_freeze_stays_available(self) -> None:
        """Media uploaded before legacy_freeze_before_ms is served without a token; later media is not."""
        old = self.upload_ok(samples.TEXT, "text/plain")
        self.reactor.advance(1000)
        new = self.upload_ok(samples.PDF, "application/pdf")
        channel = self.make_request("GET", f"{LEGACY}/download/{old}")
        self.assertEqual((channel.code, channel.result["body"]), (200, samples.TEXT))
        self.assertIn("public", channel.header("Cache-Control") or "")
        self.assertEqual(self.make_request("GET", f"{LEGACY}/download/{new}").code, 404)

    @override_config({"media": {"legacy_unauthenticated_media": "open"}})
    def test_open_legacy_endpoints(self) -> None:
        """With 'open' every local media is served on the deprecated endpoints."""
        mxc = self.upload_ok(samples.TEXT, "text/plain")
        self.assertEqual(self.make_request("GET", f"{LEGACY}/download/{mxc}").result["body"], samples.TEXT)


class DeletionAndQuarantineTests(MediaTestCase):
    def test_owner_deletes_media(self) -> None:
        """The uploader can delete; others get 404; the file goes once nothing references it."""
        mxc = self.upload_ok(samples.image_bytes("PNG", (500, 500)), "image/png")
        self.assertGreater(len(self.blob_files()), 1)
        path = f"/_sc/client/v1/media/{mxc}"
        self.assertEqual(self.make_request("DELETE", path, access_token=self.bob).code, 404)
        self.assertEqual(self.make_request("DELETE", path, access_token=self.alice).code, 200)
        self.assertEqual(self.download(mxc).code, 404)
        self.assertEqual(self.blob_files(), [])
        usage = self.make_request("GET", "/_sc/client/v1/media/usage", access_token=self.alice).json_body
        self.assertEqual((usage["used_bytes"], usage["file_count"]), (0, 0))

    def test_shared_blob_survives_one_deletion(self) -> None:
        """Deleting one of two media with the same bytes keeps the file for the other."""
        first = self.upload_ok(samples.PDF, "application/pdf")
        second = self.upload_ok(samples.PDF, "application/pdf", token=self.bob)
        self.assertEqual(self.make_request("DELETE", f"/_sc/client/v1/media/{first}", access_token=self.alice).code, 200)
        self.assertEqual(self.download(second).result["body"], samples.PDF)

    def test_admin_quarantine_and_purge(self) -> None:
        """Admins quarantine (404 for everyone), release, and purge; non-admins are 403."""
        mxc = self.upload_ok(samples.PDF, "application/pdf")
        admin = "/_synapse/admin/v1/media"
        self.assertEqual(self.make_request("POST", f"{admin}/quarantine/{mxc}", {}, access_token=self.bob).code, 403)
        self.assertEqual(self.make_request("POST", f"{admin}/quarantine/{mxc}", {}, access_token=self.admin).code, 200)
        self.assertEqual(self.download(mxc).code, 404)
        self.assertEqual(self.make_request("POST", f"{admin}/unquarantine/{mxc}", {}, access_token=self.admin).code, 200)
        self.assertEqual(self.download(mxc).code, 200)
        purge = self.make_request("DELETE", f"{admin}/{mxc}", access_token=self.admin)
        self.assertEqual(purge.json_body, {"deleted_media": [mxc.split("/")[1]], "total": 1})
        self.assertEqual(self.blob_files(), [])

    @override_config({"media": {"local_media_lifetime_s": 3600, "cleanup_interval_s": 100000}})
    def test_retention_deletes_unaccessed_media(self) -> None:
        """With local_media_lifetime_s, media not downloaded for that long is deleted by the cleanup."""
        kept = self.upload_ok(samples.TEXT, "text/plain")
        dropped = self.upload_ok(samples.PDF, "application/pdf")
        self.reactor.advance(3000)
        self.download(kept)
        self.reactor.advance(1000)
        stats = self.get_success(self.hs.features.get(MediaRepository).run_cleanup())
        self.assertEqual(stats["retention"], 1)
        self.assertEqual(self.download(kept).code, 200)
        self.assertEqual(self.download(dropped).code, 404)


class QuotaTests(MediaTestCase):
    @override_config({"media": {"default_quota": 1000}})
    def test_default_quota_enforced(self) -> None:
        """An upload that would take the user over the quota is 403 M_FORBIDDEN; usage is visible."""
        self.upload_ok(b"a" * 600, "text/plain")
        channel = self.upload(b"b" * 600, "text/plain")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        usage = self.make_request("GET", "/_sc/client/v1/media/usage", access_token=self.alice).json_body
        self.assertEqual(usage, {"used_bytes": 600, "file_count": 1, "quota_bytes": 1000, "custom_quota": False})
        self.upload_ok(b"c" * 400, "text/plain")
        self.assertEqual(len(self.blob_files()), 2)

    def test_admin_sets_quota(self) -> None:
        """Admins read and set a user's quota (null resets); bad values are 400; users cannot."""
        path = "/_synapse/admin/v1/users/@alice:test:8448/media_quota"
        self.assertEqual(self.make_request("PUT", path, {"quota_bytes": 10}, access_token=self.alice).code, 403)
        for bad in ({"quota_bytes": -1}, {"quota_bytes": "1"}, {"quota_bytes": True}, {}):
            self.assertEqual(self.make_request("PUT", path, bad, access_token=self.admin).code, 400, bad)
        channel = self.make_request("PUT", path, {"quota_bytes": 10}, access_token=self.admin)
        self.assertEqual(channel.json_body["quota_bytes"], 10)
        self.assertEqual(self.upload(samples.TEXT, "text/plain").code, 403)
        self.make_request("PUT", path, {"quota_bytes": None}, access_token=self.admin)
        self.upload_ok(samples.TEXT, "text/plain")
        got = self.make_request("GET", path, access_token=self.admin).json_body
        self.assertEqual((got["used_bytes"], got["quota_bytes"], got["custom_quota"]), (len(samples.TEXT), None, False))
        remote = self.make_request("GET", "/_synapse/admin/v1/users/@x:elsewhere/media_quota", access_token=self.admin)
        self.assertEqual(remote.code, 400)
