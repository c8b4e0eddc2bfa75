// Preload (node --import) for tests: this process's fetch requests leave from the local address
// in RENDEZVOUS_TEST_LOCAL_ADDRESS (e.g. 127.0.0.2), so one machine can play a second one.
import { Agent, setGlobalDispatcher } from 'undici';

const localAddress = process.env.RENDEZVOUS_TEST_LOCAL_ADDRESS;
if (localAddress) setGlobalDispatcher(new Agent({ localAddress }));
