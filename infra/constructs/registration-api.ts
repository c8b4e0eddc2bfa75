/**
 * The registration API: API Gateway HTTP API with the seed's routes, `PUT /` (register) and
 * `GET /` (lookup), each to its own function with least-privilege grants; any other method at
 * `/` reaches the read-only lookup function, which answers 405 with `Allow`.
 */
import { CfnOutput } from 'aws-cdk-lib';
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
  /** Steady requests per second and burst, for the whole stage. */
  throttle?: { rateLimit: number; burstLimit: number };
}

/** The registration API of one region. */
export class RegistrationApi extends Construct {
  readonly api: HttpApi;
  readonly stage: HttpStage;
  readonly register: RendezvousFunction;
  readonly lookup: RendezvousFunction;
  readonly url: string;

  constructor(scope: Construct, id: string, props: RegistrationApiProps) {
    super(scope, id);
    const environment = {
      RENDEZVOUS_TABLE: props.table.tableName,
      RELAY_PUBLIC_HOST: props.relayHost,
      RELAY_PUBLIC_PORT: String(props.relayPort),
      ...(props.relayTlsPort ? { RELAY_PUBLIC_TLS_PORT: String(props.relayTlsPort) } : {}),
    };
    this.register = new RendezvousFunction(this, 'Register', {
      entry: 'functions/register.ts',
      environment,
      logRetention: props.logRetention,
    });
    this.lookup = new RendezvousFunction(this, 'Lookup', {
      entry: 'functions/lookup.ts',
      environment: { RENDEZVOUS_TABLE: props.table.tableName },
      logRetention: props.logRetention,
    });
    // Lookup only reads; register reads and writes single items conditionally.
    props.table.grant(this.lookup.fn, ['GetItem']);
    props.table.grant(this.register.fn, ['GetItem', 'PutItem', 'UpdateItem']);

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
    const register = new HttpLambdaIntegration('RegisterIntegration', this.register.fn);
    const lookup = new HttpLambdaIntegration('LookupIntegration', this.lookup.fn);
    this.api.addRoutes({ path: '/', methods: [HttpMethod.PUT], integration: register });
    this.api.addRoutes({ path: '/', methods: [HttpMethod.GET], integration: lookup });
    this.api.addRoutes({ path: '/', methods: [HttpMethod.ANY], integration: lookup });
    this.url = this.api.apiEndpoint;
    new CfnOutput(this, 'ApiUrl', { value: this.url, description: 'RENDEZVOUS_API for expose and connect' });
  }
}
