/**
 * What a hidden-server uuid may be. Here, not in the server's identities, so that the client
 * package (client/, core/ and its CLI) checks a uuid by the same rule without the server layer.
 */

const UUID_SHAPE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** What a uuid may hold, in words (for a person: the command line's usage error says it). */
export const UUID_RULE = '1–128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit';

/** True when `uuid` has the shape the registration API accepts. */
export const isUuid = (uuid: string): boolean => UUID_SHAPE.test(uuid);
