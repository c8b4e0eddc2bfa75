/**
 * The registration API: API Gateway HTTP API with the seed's routes, `PUT /` (register) and
 * `GET /` (lookup), and the same on any other path (`/{proxy+}`: the original reads only the
 * query), each to its own function's `live` alias with least-privilege grants; any other method
 * reaches the read-only lookup function, which answers 405 with `Allow`.
 *
 * Limits: the stage throttle bounds the region; each function's reserved concurrency bounds what
 * a flood on one can take from the other and from the account. There is no per-client limit at
 * the edge: HTTP APIs take neither usage plans nor AWS WAF (both are REST API features), and the
 * clients (hidden servers, mobile apps) carry no API key. What a single source can do is bounded
 * inside: wrong codes per uuid and per source address (server/limits.ts), one-time codes.
 * The register function may also use the table's home replica (one-time codes are claimed there,
 * so a code holds across regions); both functions are told the home region in
 * `RENDEZVOUS_HOME_REGION`.
 */
import { CfnOutput, Stack } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import { HttpApi, HttpMethod, HttpStage, LogGroupLogDestination } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { RendezvousFunction } from './function.js';
import type { StateTable } from './state-table.js';

/** Props of the registration API. */
export interface RegistrationApiProps {
  table: StateTable;
  /** What triples name: the relay's public host and generic-protocol port. */
  relayHost: string;
  relayPort: number;
  /** The generic protocol's TLS port, when the relay has one (triples carry it as `tlsPort`). */
  relayTlsPort?: number;
  logRetention: RetentionDays;
  /** Prefix of this region's alarm names (the pipeline's alarm gate lists alarms by it). */
  alarmPrefix: string;
  /** Steady requests per second and burst, for the whole stage. */
  throttle?: { rateLimit: number; burstLimit: number };
  /** Reserved concurrency of each function (undefined: none reserved). */
  reservedConcurrency?: number;
  /** Direct addressing: look-ups name the relay task holding the hidden server (RENDEZVOUS_LOOKUP_DIRECT). */
  lookupDirect?: boolean;
}

/** The registration API of one region. */
export class RegistrationApi extends Construct {
  readonly api: HttpApi;
  readonly stage: HttpStage;
  readonly register: RendezvousFunction;
  readonly lookup: RendezvousFunction;
  readonly url: string;
  /** The `ApiUrl` output (the pipeline's smoke step reads it). */
  readonly urlOutput: CfnOutput;

  constructor(scope: Construct, id: string, props: RegistrationApiProps) {
    super(scope, id);
    // The home replica's region; equal to this one in the home region itself.
    const home = { RENDEZVOUS_HOME_REGION: props.table.homeRegion ?? Stack.of(this).region };
    const environment = {
      RENDEZVOUS_TABLE: props.table.tableName,
      ...home,
      RELAY_PUBLIC_HOST: props.relayHost,
      RELAY_PUBLIC_PORT: String(props.relayPort),
      ...(props.relayTlsPort ? { RELAY_PUBLIC_TLS_PORT: String(props.relayTlsPort) } : {}),
    };
    this.register = new RendezvousFunction(this, 'Register', {
      entry: 'functions/register.ts',
      environment,
      logRetention: props.logRetention,
      canaryAlarmName: `${props.alarmPrefix}RegisterCanaryErrors`,
      reservedConcurrency: props.reservedConcurrency,
    });
    this.lookup = new RendezvousFunction(this, 'Lookup', {
      entry: 'functions/lookup.ts',
      environment: {
        RENDEZVOUS_TABLE: props.table.tableName,
        ...home,
        ...(props.lookupDirect ? { RENDEZVOUS_LOOKUP_DIRECT: 'on' } : {}),
      },
      logRetention: props.logRetention,
      canaryAlarmName: `${props.alarmPrefix}LookupCanaryErrors`,
      reservedConcurrency: props.reservedConcurrency,
    });
    // Lookup only reads, and only this region's replica. Register reads the identity, claims its code and counts guesses on the
    // home replica (get, conditional update); here it writes the registration and its cookie
    // (put), expires a replaced cookie (update) and withdraws a registration that raced a
    // rotation or a disable (delete). test/infra/grants.test.ts derives these from the code.
    // With direct addressing it also queries the uuid's park records (heartbeats are gets).
    props.table.grant(this.lookup.fn, props.lookupDirect ? ['GetItem', 'Query'] : ['GetItem']);
    props.table.grantByReplica(this.register.fn, {
      local: ['PutItem', 'UpdateItem', 'DeleteItem'],
      home: ['GetItem', 'UpdateItem'],
    });

    this.api = new HttpApi(this, 'Api', {
      createDefaultStage: false,
      description: 'rendezvous registration API',
    });
    const accessLogs = new LogGroup(this, 'AccessLogs', { retention: props.logRetention });
    this.stage = new HttpStage(this, 'Stage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: props.throttle ?? { rateLimit: 100, burstLimit: 200 },
      accessLogSettings: {
        destination: new LogGroupLogDestination(accessLogs),
        // No query string: it carries TOTP codes.
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            method: '$context.httpMethod',
            path: '$context.path',
            status: '$context.status',
            latency: '$context.responseLatency',
            integrationError: '$context.integrationErrorMessage',
          }),
        ),
      },
    });
    // The aliases, never $LATEST: a new version gets traffic only as CodeDeploy shifts it.
    const register = new HttpLambdaIntegration('RegisterIntegration', this.register.alias);
    const lookup = new HttpLambdaIntegration('LookupIntegration', this.lookup.alias);
    // Every path, `/` and `/{proxy+}` alike: the original reads only the query, so a registrar URL
    // with a path (`https://host/rendezvous?uuid=…`) must reach the same handlers (which never
    // look at the path).
    for (const path of ['/', '/{proxy+}']) {
      this.api.addRoutes({ path, methods: [HttpMethod.PUT], integration: register });
      this.api.addRoutes({ path, methods: [HttpMethod.GET], integration: lookup });
      this.api.addRoutes({ path, methods: [HttpMethod.ANY], integration: lookup });
    }
    this.url = this.api.apiEndpoint;
    this.urlOutput = new CfnOutput(this, 'ApiUrl', {
      value: this.url,
      description: 'RENDEZVOUS_API for expose and connect',
    });
  }
}
