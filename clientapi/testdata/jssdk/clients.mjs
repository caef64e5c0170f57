// Helpers shared by the scripts here: a client for one of the users the Go test
// passes in the environment (PREFIX_TOKEN, PREFIX_ID, PREFIX_DEVICE; HS), and a
// promise for its first processed sync.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("warn");

export function client(prefix) {
  const env = process.env;
  return sdk.createClient({
    baseUrl: env.HS,
    accessToken: env[prefix + "_TOKEN"],
    userId: env[prefix + "_ID"],
    deviceId: env[prefix + "_DEVICE"],
  });
}

// prepared resolves once the client's first sync has been processed.
export function prepared(c) {
  return new Promise((resolve, reject) => {
    c.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error("sync error: " + data?.error));
    });
  });
}
