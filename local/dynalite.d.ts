declare module 'dynalite' {
  import type { Server } from 'node:http';
  /** dynalite's factory: an http.Server speaking the DynamoDB API. */
  export default function dynalite(opts?: {
    path?: string;
    createTableMs?: number;
    deleteTableMs?: number;
    updateTableMs?: number;
    ssl?: boolean;
  }): Server;
}
