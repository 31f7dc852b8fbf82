/* OpenSSL contexts for the daemon's TLS links (tls.h). */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static bool
set(const char *s)
{
    return s != NULL && *s != '\0';
}

void
tls_last_error(char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
    }
    snprintf(err, errlen, "%s", buf);
    ERR_clear_error();
}

bool
tls_is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Loads a private key from a path or from PEM text. */
static int
load_key(SSL_CTX *ctx, const char *key, char *err, size_t errlen)
{
    if (strncmp(key, "-----BEGIN", 10) != 0) {
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            char why[256];
            tls_last_error(why, sizeof(why));
            snprintf(err, errlen, "cannot load the private key %s: %s", key, why);
            return -1;
        }
        return 0;
    }
    BIO *bio = BIO_new_mem_buf(key, (int)strlen(key));
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    int rc = pkey && SSL_CTX_use_PrivateKey(ctx, pkey) == 1 ? 0 : -1;
    EVP_PKEY_free(pkey);
    if (rc != 0) {
        char why[256];
        tls_last_error(why, sizeof(why));
        snprintf(err, errlen, "cannot load the private key (PEM text): %s", why);
    }
    return rc;
}

static int
load_identity(SSL_CTX *ctx, const struct tls_files *f, char *err, size_t errlen)
{
    if (!set(f->cert)) {
        if (set(f->key)) {
            snprintf(err, errlen, "a TLS key is given without its certificate");
            return -1;
        }
        return 0;
    }
    if (!set(f->key)) {
        snprintf(err, errlen, "the certificate %s is given without its key", f->cert);
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, f->cert) != 1) {
        char why[256];
        tls_last_error(why, sizeof(why));
        snprintf(err, errlen, "cannot load the certificate %s: %s", f->cert, why);
        return -1;
    }
    if (load_key(ctx, f->key, err, errlen) != 0) {
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "the key does not match the certificate %s", f->cert);
        return -1;
    }
    return 0;
}

int
tls_ctx_use_identity(SSL_CTX *ctx, const struct tls_files *f, char *err, size_t errlen)
{
    return load_identity(ctx, f, err, errlen);
}

static int
load_ca(SSL_CTX *ctx, const char *ca, char *err, size_t errlen)
{
    if (!set(ca)) {
        return SSL_CTX_set_default_verify_paths(ctx) == 1 ? 0 : -1;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        char why[256];
        tls_last_error(why, sizeof(why));
        snprintf(err, errlen, "cannot load the CA %s: %s", ca, why);
        return -1;
    }
    return 0;
}

static SSL_CTX *
new_ctx(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    }
    return ctx;
}

SSL_CTX *
tls_server_ctx(const struct tls_files *f, char *err, size_t errlen)
{
    SSL_CTX *ctx = new_ctx(TLS_server_method());
    if (ctx == NULL) {
        tls_last_error(err, errlen);
        return NULL;
    }
    if (!set(f->cert)) {
        snprintf(err, errlen, "a TLS listener needs a certificate and key");
        goto fail;
    }
    if (load_identity(ctx, f, err, errlen) != 0) {
        goto fail;
    }
    if (set(f->ca)) {
        if (load_ca(ctx, f->ca, err, errlen) != 0) {
            goto fail;
        }
        /* Mutual TLS: a client without a certificate from this CA gets no session at all. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(f->ca);
        if (names) {
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *
tls_client_ctx(const struct tls_files *f, char *err, size_t errlen)
{
    SSL_CTX *ctx = new_ctx(TLS_client_method());
    if (ctx == NULL) {
        tls_last_error(err, errlen);
        return NULL;
    }
    if (load_ca(ctx, f->ca, err, errlen) != 0 || load_identity(ctx, f, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

SSL *
tls_client_ssl(SSL_CTX *ctx, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        return NULL;
    }
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (tls_is_ip(host)) {
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    return ssl;
}

void
tls_peer_cn(SSL *ssl, char *out, size_t size)
{
    out[0] = '\0';
    X509 *peer = SSL_get_peer_certificate(ssl);
    if (peer) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, out, (int)size);
        X509_free(peer);
    }
}
