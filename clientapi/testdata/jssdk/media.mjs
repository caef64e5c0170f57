// matrix-js-sdk sends an image and a second client receives it: Alice uploads the
// file at IMAGE_PATH with uploadContent and sends an m.image event; Bob's sync loop
// receives the event and downloads the image and a 96×96 cropped thumbnail through
// the authenticated media URLs the SDK builds. Run by clientapi/jssdk_test.go.
// Prints one JSON line (SHA-256 of what Bob downloaded, the thumbnail in base64) and
// exits 0, or prints the failure and exits 1.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as sdk from "matrix-js-sdk";
import { client, prepared } from "./clients.mjs";

const env = process.env;
const roomId = env.ROOM_ID;

const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out" }));
  process.exit(1);
}, 30000);

const alice = client("ALICE");
const bob = client("BOB");
const received = new Promise((resolve) => {
  bob.on(sdk.RoomEvent.Timeline, (ev, room, toStart) => {
    if (toStart || room?.roomId !== roomId) return;
    if (ev.getType() === "m.room.message" && ev.getContent().msgtype === "m.image") resolve(ev.getContent());
  });
});
await Promise.all([alice.startClient({ initialSyncLimit: 1 }), bob.startClient({ initialSyncLimit: 1 })]);
await Promise.all([prepared(alice), prepared(bob)]);

const image = readFileSync(env.IMAGE_PATH);
const { content_uri } = await alice.uploadContent(image, { name: "pattern.png", type: "image/png" });
await alice.sendMessage(roomId, {
  msgtype: "m.image",
  body: "pattern.png",
  url: content_uri,
  info: { mimetype: "image/png", size: image.length, w: Number(env.IMAGE_W), h: Number(env.IMAGE_H) },
});

const content = await received;
// Authenticated media: the SDK builds /_matrix/client/v1/media URLs, and the
// access token goes in the Authorization header.
const auth = { headers: { Authorization: "Bearer " + bob.getAccessToken() } };
const full = await fetch(bob.mxcUrlToHttp(content.url, undefined, undefined, undefined, false, true, true), auth);
const thumb = await fetch(bob.mxcUrlToHttp(content.url, 96, 96, "crop", false, true, true), auth);
if (!full.ok || !thumb.ok) {
  console.log(JSON.stringify({ error: `download ${full.status}, thumbnail ${thumb.status}` }));
  process.exit(1);
}
const fullBytes = Buffer.from(await full.arrayBuffer());
const thumbBytes = Buffer.from(await thumb.arrayBuffer());
clearTimeout(timer);
alice.stopClient();
bob.stopClient();
console.log(
  JSON.stringify({
    url: content.url,
    sha256: createHash("sha256").update(fullBytes).digest("hex"),
    thumbnailType: thumb.headers.get("content-type"),
    thumbnail: thumbBytes.toString("base64"),
  }),
);
process.exit(0);
