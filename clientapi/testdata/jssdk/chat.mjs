// Two matrix-js-sdk clients chat in real time through a Hongyan server: Alice sends,
// Bob's sync loop receives and answers, Alice's sync loop receives the answer. Run by
// clientapi/jssdk_test.go, which registers the users, creates the room and passes
// them in the environment. Prints one JSON line with the round trips and exits 0, or
// prints the failure and exits 1.
import * as sdk from "matrix-js-sdk";
import { client, prepared } from "./clients.mjs";

const env = process.env;
const rounds = Number(env.ROUNDS || 5);
const roomId = env.ROOM_ID;

// messagesFrom calls fn for each live text message from sender in the room.
function messagesFrom(c, sender, fn) {
  c.on(sdk.RoomEvent.Timeline, (ev, room, toStartOfTimeline) => {
    if (toStartOfTimeline || room?.roomId !== roomId) return;
    if (ev.getType() === "m.room.message" && ev.getSender() === sender) fn(ev.getContent().body);
  });
}

const alice = client("ALICE");
const bob = client("BOB");
const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out", aliceGot, bobGot }));
  process.exit(1);
}, 30000);

const aliceGot = [];
const bobGot = [];
const waiters = [];
messagesFrom(bob, env.ALICE_ID, async (body) => {
  bobGot.push(body);
  await bob.sendTextMessage(roomId, "re: " + body);
});
messagesFrom(alice, env.BOB_ID, (body) => {
  aliceGot.push(body);
  waiters.shift()?.();
});

await Promise.all([alice.startClient({ initialSyncLimit: 5 }), bob.startClient({ initialSyncLimit: 5 })]);
await Promise.all([prepared(alice), prepared(bob)]);

const roundTrips = [];
for (let i = 0; i < rounds; i++) {
  const answered = new Promise((resolve) => waiters.push(resolve));
  const start = performance.now();
  await alice.sendTextMessage(roomId, "ping " + i);
  await answered;
  roundTrips.push(Math.round((performance.now() - start) * 10) / 10);
}
clearTimeout(timer);
alice.stopClient();
bob.stopClient();
console.log(JSON.stringify({ bobGot, aliceGot, roundTripsMs: roundTrips }));
process.exit(0);
