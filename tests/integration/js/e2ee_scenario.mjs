// End-to-end encryption with matrix-js-sdk and its Rust crypto stack (the one Element uses),
// against a running SecureConnect server with open registration.
//
// Usage: node e2ee_scenario.mjs --base-url http://127.0.0.1:PORT --plaintext-file FILE
//          [--password PW] [--timeout-ms N] [--no-cross-signing]
//          [--no-key-backup] [--localpart-suffix S] [--verbose]
//
// Alice and bob register, log in and initialise Rust crypto (in-memory store). Both bootstrap
// cross-signing (UIA with their password) unless --no-cross-signing. Alice creates a room with
// m.room.encryption (megolm) in its initial state and invites bob; bob joins; alice sends the
// plaintext (read from FILE, UTF-8) as an m.text message; bob's client decrypts it. Alice sends bob an
// Olm-encrypted to-device message of a custom type, which bob's client decrypts. Alice backs up her
// room keys to a new server-side backup version and restores them (unless --no-key-backup). She reads
// the room event back from the server as stored, to show that the server holds ciphertext only.
//
// Output: progress and every HTTP exchange ("HTTP <who> <METHOD> <path> -> <status>") on stderr,
// without access tokens, passwords or message bodies; on stdout exactly one line,
// "RESULT <json>", with the decrypted text and what was checked. The exit code is 0 on success,
// 1 on a failed step (the error is on stderr and in the RESULT line) and 2 on the overall timeout.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import * as sdk from "matrix-js-sdk";

const { values: options } = parseArgs({
    options: {
        "base-url": { type: "string" },
        "plaintext-file": { type: "string" },
        password: { type: "string", default: "correct-horse-battery" },
        "timeout-ms": { type: "string", default: "90000" },
        "no-cross-signing": { type: "boolean", default: false },
        "no-key-backup": { type: "boolean", default: false },
        "localpart-suffix": { type: "string", default: "" },
        verbose: { type: "boolean", default: false },
    },
});

const BASE_URL = options["base-url"];
const PASSWORD = options.password;
const TIMEOUT_MS = Number(options["timeout-ms"]);
const CROSS_SIGNING = !options["no-cross-signing"];
const SUFFIX = options["localpart-suffix"];
const BACKUP = !options["no-key-backup"];
const STEP_TIMEOUT_MS = Math.min(30000, TIMEOUT_MS);
const POLL_MS = 100;
const SECRET_TYPE = "org.securec.test.secret";
const SECRET = { body: "to-device secret ✓", n: 42 };

if (!BASE_URL || !options["plaintext-file"]) {
    process.stderr.write("usage: e2ee_scenario.mjs --base-url URL --plaintext-file FILE\n");
    process.exit(64);
}
const PLAINTEXT = readFileSync(options["plaintext-file"], "utf8");

// Everything but the RESULT line goes to stderr; the SDK's own logging is kept to warnings and
// errors unless --verbose.
for (const method of ["log", "info", "debug", "trace"]) console[method] = console.error;
// The SDK delays each key-backup upload loop by up to 10 s at random (to spread clients' uploads);
// no need here. An internal knob: if it moves, the scenario only gets slower.
try {
    const { RustBackupManager } = await import("matrix-js-sdk/lib/rust-crypto/backup.js");
    RustBackupManager.maxBackupLoopStartDelayMillis = 0;
} catch (err) {
    process.stderr.write(`could not shorten the key backup delay: ${err}\n`);
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];
const MIN_LEVEL = LEVELS.indexOf(options.verbose ? "debug" : "warn");

/** A matrix-js-sdk Logger writing to stderr, filtered by level. */
function makeLogger(prefix) {
    const log = { getChild: (child) => makeLogger(`${prefix}${child}`) };
    for (const [index, level] of LEVELS.entries()) {
        log[level] = index < MIN_LEVEL ? () => {} : (...args) => console.error(`[${level}] ${prefix}`, ...args);
    }
    return log;
}

const result = { ok: false, step: "start", shimmed: [] };

// Endpoints outside E2EE that matrix-js-sdk needs before its first sync; answered locally only while
// the server answers them 404 M_UNRECOGNIZED (each use is reported in result.shimmed).
const EMPTY_RULESET = { override: [], content: [], room: [], sender: [], underride: [] };
const SHIMS = [
    { name: "GET /pushrules/", method: "GET", path: /\/_matrix\/client\/v3\/pushrules\/$/, body: { global: EMPTY_RULESET } },
];

function emit() {
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

const overall = setTimeout(() => {
    result.error = `overall timeout of ${TIMEOUT_MS} ms during step ${result.step}`;
    process.stderr.write(`${result.error}\n`);
    emit();
    process.exit(2);
}, TIMEOUT_MS);

function step(name) {
    result.step = name;
    process.stderr.write(`STEP ${name}\n`);
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` (sync or async) until it returns a truthy value or `ms` pass. */
async function waitFor(what, check, ms = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await sleep(POLL_MS);
    }
}

/** A fetch that logs every exchange (method, path without query, status; error bodies of 4xx/5xx). */
function loggingFetch(who) {
    return async (input, init = {}) => {
        const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
        const method = init.method ?? "GET";
        const started = Date.now();
        let response;
        try {
            response = await fetch(input, init);
        } catch (err) {
            process.stderr.write(`HTTP ${who} ${method} ${url.pathname} -> network error ${err}\n`);
            throw err;
        }
        let line = `HTTP ${who} ${method} ${url.pathname} -> ${response.status} (${Date.now() - started} ms)`;
        const shim = SHIMS.find((s) => s.method === method && s.path.test(url.pathname));
        if (shim && response.status === 404 && (await response.clone().text()).includes("M_UNRECOGNIZED")) {
            // The server lacks an endpoint the SDK cannot start without (not an E2EE one): answer
            // for it, and report that we did, so the Python test can tell.
            if (!result.shimmed.includes(shim.name)) result.shimmed.push(shim.name);
            process.stderr.write(`${line} [SHIM ${shim.name}: answered locally]\n`);
            return new Response(JSON.stringify(shim.body), {
                status: 200,
                headers: { "Content-Type": "application/json" },
            });
        }
        if (response.status >= 400) {
            // Error bodies are Matrix errors or UIA flows: no secrets, no message content.
            const body = await response.clone().text();
            line += ` ${body.slice(0, 500)}`;
        }
        process.stderr.write(`${line}\n`);
        return response;
    };
}

async function api(method, path, body, accessToken) {
    const headers = { "Content-Type": "application/json" };
    if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
    const response = await fetch(BASE_URL + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} -> ${response.status} ${text.slice(0, 500)}`);
    return JSON.parse(text);
}

/** Registers `localpart` (m.login.dummy), logs in a new device and starts a Rust-crypto client. */
async function startClient(localpart) {
    step(`register ${localpart}`);
    await api("POST", "/_matrix/client/v3/register", {
        username: localpart,
        password: PASSWORD,
        inhibit_login: true,
        auth: { type: "m.login.dummy" },
    });
    step(`login ${localpart}`);
    const login = await api("POST", "/_matrix/client/v3/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password: PASSWORD,
        initial_device_display_name: `${localpart} (matrix-js-sdk)`,
    });
    const client = sdk.createClient({
        baseUrl: BASE_URL,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        fetchFn: loggingFetch(localpart),
        logger: makeLogger(`${localpart} `),
    });
    step(`initRustCrypto ${localpart}`);
    await client.initRustCrypto({ useIndexedDB: false });
    step(`first sync ${localpart}`);
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`${localpart}: sync error ${data?.error}`));
        });
    });
    await client.startClient({ initialSyncLimit: 20, pollTimeout: 1000 });
    await Promise.race([prepared, sleep(STEP_TIMEOUT_MS).then(() => {
        throw new Error(`${localpart}: first sync not done after ${STEP_TIMEOUT_MS} ms`);
    })]);
    return client;
}

/** Cross-signing bootstrap, answering UIA with the account password. */
async function bootstrapCrossSigning(client) {
    const crypto = client.getCrypto();
    const userId = client.getUserId();
    await crypto.bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (err) {
                const session = err?.data?.session;
                if (err?.httpStatus !== 401 || !session) throw err;
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: userId },
                    password: PASSWORD,
                    session,
                });
            }
        },
    });
    const status = await crypto.getCrossSigningStatus();
    const ready = await crypto.isCrossSigningReady();
    // The device's self-signing signature went up through /keys/signatures/upload; the client sees
    // it once the server reports its own user in device_lists.changed and it re-queries its keys.
    const ownDeviceSigned = await waitFor(`${userId}'s device signed by its self-signing key`, async () => {
        const own = await crypto.getDeviceVerificationStatus(userId, client.getDeviceId());
        return Boolean(own?.crossSigningVerified);
    }).catch((err) => {
        process.stderr.write(`${err.message}\n`);
        return false;
    });
    return {
        ready,
        public_keys_on_device: status.publicKeysOnDevice,
        private_keys_cached: status.privateKeysCachedLocally,
        own_device_cross_signed: ownDeviceSigned,
    };
}

/** Server-side key backup: a new version, the room's megolm session uploaded, restored again. */
async function backUpAndRestore(client, roomId) {
    const crypto = client.getCrypto();
    const token = client.getAccessToken();
    await crypto.resetKeyBackup();
    const version = await waitFor("an active key backup", () => crypto.getActiveSessionBackupVersion());
    const check = await crypto.checkKeyBackupAndEnable();
    // The client uploads keys in the background; wait until the server counts them.
    const info = await waitFor("backed-up room keys", async () => {
        const current = await api("GET", "/_matrix/client/v3/room_keys/version", undefined, token);
        return current.count >= 1 ? current : null;
    });
    const query = `?version=${encodeURIComponent(version)}`;
    const room = await api("GET", `/_matrix/client/v3/room_keys/keys/${encodeURIComponent(roomId)}${query}`,
        undefined, token);
    const restored = await crypto.restoreKeyBackup();
    return {
        version,
        server_version: info.version,
        algorithm: info.algorithm,
        trusted: Boolean(check?.trustInfo?.trusted),
        matches_decryption_key: Boolean(check?.trustInfo?.matchesDecryptionKey),
        count: info.count,
        etag_is_string: typeof info.etag === "string",
        room_sessions: Object.keys(room.sessions ?? {}).length,
        restored_total: restored.total,
        restored_imported: restored.imported,
    };
}

async function main() {
    const alice = await startClient(`alice${SUFFIX}`);
    const bob = await startClient(`bob${SUFFIX}`);
    const clients = [alice, bob];
    try {
        if (CROSS_SIGNING) {
            step("cross-signing alice");
            result.cross_signing_alice = await bootstrapCrossSigning(alice);
            step("cross-signing bob");
            result.cross_signing_bob = await bootstrapCrossSigning(bob);
        }

        step("alice creates the encrypted room");
        const { room_id: roomId } = await alice.createRoom({
            name: "Secret (js-sdk)",
            invite: [bob.getUserId()],
            initial_state: [{
                type: "m.room.encryption",
                state_key: "",
                content: { algorithm: "m.megolm.v1.aes-sha2" },
            }],
        });
        result.room_id = roomId;

        step("bob sees the invite");
        await waitFor("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
        step("bob joins");
        await bob.joinRoom(roomId);
        await waitFor("bob's join in bob's client", () => bob.getRoom(roomId)?.getMyMembership() === "join");
        step("alice sees bob joined");
        await waitFor("bob's join in alice's client",
            () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
        result.encrypted_alice = await alice.getCrypto().isEncryptionEnabledInRoom(roomId);
        result.encrypted_bob = await bob.getCrypto().isEncryptionEnabledInRoom(roomId);

        step("alice sends the encrypted message");
        const { event_id: eventId } = await alice.sendEvent(roomId, "m.room.message", {
            msgtype: "m.text",
            body: PLAINTEXT,
        });
        result.event_id = eventId;

        step("bob decrypts");
        const event = await waitFor("bob's decryption of the message", () => {
            const ev = bob.getRoom(roomId)?.findEventById(eventId);
            if (!ev || ev.isBeingDecrypted() || ev.isDecryptionFailure()) return null;
            return ev.getClearContent() ? ev : null;
        });
        result.decrypted_body = event.getClearContent().body;
        result.bob_saw_wire_type = event.getWireType();
        result.bob_saw_encrypted = event.isEncrypted();
        result.sender_device_known = Boolean(event.getSenderKey());

        step("alice sends bob an Olm-encrypted to-device message");
        const received = [];
        bob.on(sdk.ClientEvent.ToDeviceEvent, (ev) => {
            if (ev.getType() === SECRET_TYPE) received.push(ev);
        });
        const batch = await alice.getCrypto().encryptToDeviceMessages(
            SECRET_TYPE,
            [{ userId: bob.getUserId(), deviceId: bob.getDeviceId() }],
            SECRET,
        );
        result.to_device_wire_type = batch.eventType;
        await alice.queueToDevice(batch);
        step("bob decrypts the to-device message");
        const secret = await waitFor("bob's to-device message", () => received[0]);
        await sleep(500); // a duplicate delivery would show up here
        result.to_device_count = received.length;
        result.to_device_content = secret.getContent();
        result.to_device_encrypted = secret.isEncrypted();
        result.to_device_sender = secret.getSender();

        if (BACKUP) {
            step("alice backs up her room keys");
            result.backup = await backUpAndRestore(alice, roomId);
        }

        step("alice reads back the stored event");
        const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`;
        const raw = await api("GET", path, undefined, alice.getAccessToken());
        result.stored_type = raw.type;
        result.stored_algorithm = raw.content?.algorithm;
        result.stored_contains_plaintext = JSON.stringify(raw).includes(PLAINTEXT)
            || JSON.stringify(raw).includes(JSON.stringify(PLAINTEXT).slice(1, -1));

        step("done");
        result.ok = true;
    } finally {
        for (const client of clients) client.stopClient();
    }
}

let code = 0;
try {
    await main();
} catch (err) {
    result.error = `${err?.name ?? "Error"}: ${err?.message ?? err}`;
    process.stderr.write(`FAILED in step ${result.step}: ${err?.stack ?? err}\n`);
    code = 1;
}
clearTimeout(overall);
emit();
process.exit(code);
